#!/usr/bin/env bash
# Regenerates the X.509 test PKI of one tenant with the openssl CLI alone: a root
# and an intermediate CA, good device certificates, and one certificate per way a
# device chain must be refused, each differing from a good leaf in one property.
# Validity dates are fixed so a test injects its own "now" (2026-06-01T00:00:00Z
# is inside every normal window). Keys are fresh on every run, so fingerprints
# change; manifest.txt records them.
#
# Usage: tests/pki/make_test_pki.sh OUT_DIR      (creates OUT_DIR; a few seconds)
# Used by //services/identity/x509:pki_script_test, which runs it at test time;
# nothing it writes is checked in.
#
# Files in OUT_DIR (every certificate <name>.pem has its key <name>.key.pem):
#   root.pem              tenant root CA: EC P-256, CA:TRUE (critical), keyUsage
#                         keyCertSign,cRLSign (critical), SKID
#   intermediate.pem      tenant intermediate CA: EC P-256, CA:TRUE pathlen:0, AKID/SKID,
#                         signed by root
#   intermediate.crl.pem  CRL of the intermediate listing revoked.pem; lastUpdate
#                         2024-01-01, nextUpdate 2034-01-01
#   device-ec.pem         good leaf (CN=device-ec, EC P-256): CA:FALSE, keyUsage
#                         digitalSignature (critical), EKU clientAuth, AKID/SKID
#   device-rsa.pem        good leaf (CN=device-rsa, RSA-2048): keyUsage
#                         digitalSignature,keyEncipherment
#   expired.pem           leaf whose notAfter is 2025-01-01
#   not-yet-valid.pem     leaf whose notBefore is 2030-01-01
#   rogue-root.pem        a root no tenant registers (CN=rogue root)
#   wrong-issuer.pem      leaf signed by rogue-root
#   lookalike-root.pem    a root with the tenant root's exact subject name, another key
#   lookalike-issuer.pem  leaf signed by lookalike-root
#   revoked.pem           leaf listed in intermediate.crl.pem
#   ca-false-intermediate.pem  "intermediate" with CA:FALSE (keyUsage still
#                         keyCertSign,cRLSign), signed by root
#   ca-false-leaf.pem     leaf signed by ca-false-intermediate
#   sub-intermediate.pem  CA:TRUE signed by intermediate (breaks its pathlen:0)
#   pathlen-leaf.pem      leaf signed by sub-intermediate
#   server-auth.pem       leaf whose EKU is serverAuth only
#   sha1.pem              leaf signed with SHA-1
#   rsa-1024.pem          leaf with an RSA-1024 key
#   someone-else.pem      good leaf with CN=someone-else
#   device-self.pem       self-signed device certificate (CN=device-self, EC P-256,
#                         CA:FALSE, digitalSignature, clientAuth)
#   manifest.txt          one line per certificate: name, SHA-256 of the DER (lowercase
#                         hex, the registry's thumbprint form), notBefore, notAfter
#                         (YYYYMMDDHHMMSSZ), subject CN (the rest of the line)
# Leaves other than the good ones and someone-else have CN=device-<name>.
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 OUT_DIR" >&2
  exit 2
fi
out=$1
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

readonly START=20240101000000Z
readonly END=20340101000000Z

# openssl ca's configuration and the extension profiles (-extensions <section>).
cat >"$work/openssl.cnf" <<EOF
[ ca ]
default_ca = ca_default

[ ca_default ]
# Set per CA through the environment (see sign()).
dir = \$ENV::CA_DIR
database = \$dir/index.txt
new_certs_dir = \$dir
serial = \$dir/serial
crlnumber = \$dir/crlnumber
default_md = sha256
policy = policy_any
preserve = yes
unique_subject = no
email_in_dn = no
copy_extensions = none
crl_extensions = crl_ext

[ policy_any ]
organizationName = optional
commonName = supplied

[ crl_ext ]
authorityKeyIdentifier = keyid:always

[ root_ca ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[ intermediate_ca ]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[ sub_ca ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[ not_a_ca ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[ leaf ]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[ leaf_rsa ]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[ leaf_server ]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[ self_signed ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
EOF

say() { echo "make_test_pki: $*" >&2; }

# key NAME ec|rsa2048|rsa1024
key() {
  case $2 in
    ec) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$out/$1.key.pem" ;;
    rsa2048) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$out/$1.key.pem" ;;
    rsa1024) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out "$out/$1.key.pem" ;;
  esac 2>/dev/null
}

# A fresh CA database for certificates issued by NAME.
ca_db() {
  mkdir -p "$work/ca/$1"
  : >"$work/ca/$1/index.txt"
  echo 1000 >"$work/ca/$1/serial"
  echo 01 >"$work/ca/$1/crlnumber"
}

# sign NAME SUBJECT ISSUER|self PROFILE [openssl ca options...]
# Creates NAME.key.pem (EC P-256 unless it exists) and NAME.pem, valid START..END
# unless the options override -startdate/-enddate.
sign() {
  local name=$1 subject=$2 issuer=$3 profile=$4
  shift 4
  [[ -f "$out/$name.key.pem" ]] || key "$name" ec
  openssl req -new -key "$out/$name.key.pem" -subj "$subject" -out "$work/$name.csr"
  local signer=(-cert "$out/$issuer.pem" -keyfile "$out/$issuer.key.pem")
  if [[ $issuer == self ]]; then
    ca_db "$name"
    issuer=$name
    signer=(-selfsign -keyfile "$out/$name.key.pem")
  fi
  CA_DIR="$work/ca/$issuer" openssl ca -batch -notext -config "$work/openssl.cnf" \
    "${signer[@]}" -extensions "$profile" -startdate "$START" -enddate "$END" "$@" \
    -in "$work/$name.csr" -out "$out/$name.pem" 2>"$work/ca.log" || {
    cat "$work/ca.log" >&2
    return 1
  }
}

rm -f "$out"/*.pem "$out/manifest.txt"

say "root: tenant root CA (EC P-256)"
sign root "/O=iotauth test/CN=tenant t1 root" self root_ca
ca_db root
say "intermediate: tenant intermediate CA, pathlen:0"
sign intermediate "/O=iotauth test/CN=tenant t1 intermediate" root intermediate_ca
ca_db intermediate

say "device-ec: good EC P-256 leaf"
sign device-ec "/CN=device-ec" intermediate leaf
say "device-rsa: good RSA-2048 leaf"
key device-rsa rsa2048
sign device-rsa "/CN=device-rsa" intermediate leaf_rsa
say "expired: notAfter 2025-01-01"
sign expired "/CN=device-expired" intermediate leaf -enddate 20250101000000Z
say "not-yet-valid: notBefore 2030-01-01"
sign not-yet-valid "/CN=device-not-yet-valid" intermediate leaf -startdate 20300101000000Z

say "wrong-issuer: leaf of an unregistered rogue root"
sign rogue-root "/O=iotauth test/CN=rogue root" self root_ca
sign wrong-issuer "/CN=device-wrong-issuer" rogue-root leaf
say "lookalike-issuer: leaf of a root with the tenant root's name but another key"
sign lookalike-root "/O=iotauth test/CN=tenant t1 root" self root_ca
sign lookalike-issuer "/CN=device-lookalike-issuer" lookalike-root leaf

say "revoked: leaf listed in the intermediate's CRL"
sign revoked "/CN=device-revoked" intermediate leaf
CA_DIR="$work/ca/intermediate" openssl ca -batch -config "$work/openssl.cnf" \
  -cert "$out/intermediate.pem" -keyfile "$out/intermediate.key.pem" \
  -revoke "$out/revoked.pem" -crl_reason keyCompromise 2>"$work/ca.log" || {
  cat "$work/ca.log" >&2
  exit 1
}
# openssl ca -revoke stamps the wall clock as revocationDate; pin it (a date before
# the tests' "now") so the CRL is the same whenever it is generated.
awk 'BEGIN { FS = OFS = "\t" } $1 == "R" { sub(/^[0-9]+Z/, "250601000000Z", $3) } { print }' \
  "$work/ca/intermediate/index.txt" >"$work/index.new"
mv "$work/index.new" "$work/ca/intermediate/index.txt"
CA_DIR="$work/ca/intermediate" openssl ca -batch -config "$work/openssl.cnf" \
  -cert "$out/intermediate.pem" -keyfile "$out/intermediate.key.pem" -gencrl \
  -crl_lastupdate "$START" -crl_nextupdate "$END" -out "$out/intermediate.crl.pem" \
  2>"$work/ca.log" || {
  cat "$work/ca.log" >&2
  exit 1
}

say "ca-false-leaf: leaf under an intermediate with CA:FALSE"
sign ca-false-intermediate "/O=iotauth test/CN=not a CA" root not_a_ca
ca_db ca-false-intermediate
sign ca-false-leaf "/CN=device-ca-false-leaf" ca-false-intermediate leaf

say "pathlen-leaf: leaf under a sub-intermediate of the pathlen:0 intermediate"
sign sub-intermediate "/O=iotauth test/CN=tenant t1 sub-intermediate" intermediate sub_ca
ca_db sub-intermediate
sign pathlen-leaf "/CN=device-pathlen-leaf" sub-intermediate leaf

say "server-auth: EKU serverAuth only"
sign server-auth "/CN=device-server-auth" intermediate leaf_server
say "sha1: SHA-1 signature"
sign sha1 "/CN=device-sha1" intermediate leaf -md sha1
say "rsa-1024: RSA-1024 key"
key rsa-1024 rsa1024
sign rsa-1024 "/CN=device-rsa-1024" intermediate leaf_rsa
say "someone-else: good leaf with CN=someone-else"
sign someone-else "/CN=someone-else" intermediate leaf
say "device-self: self-signed device certificate"
sign device-self "/CN=device-self" self self_signed

for f in "$out"/*.pem; do
  case $f in *.key.pem | *.crl.pem) continue ;; esac
  name=$(basename "$f" .pem)
  fp=$(openssl x509 -in "$f" -outform DER | openssl dgst -sha256 -r | cut -d' ' -f1)
  nb=$(openssl x509 -in "$f" -noout -startdate -dateopt iso_8601 | cut -d= -f2 | tr -d ' :-')
  na=$(openssl x509 -in "$f" -noout -enddate -dateopt iso_8601 | cut -d= -f2 | tr -d ' :-')
  cn=$(openssl x509 -in "$f" -noout -subject -nameopt multiline | sed -n 's/^ *commonName *= //p')
  printf '%s %s %s %s %s\n' "$name" "$fp" "$nb" "$na" "$cn" >>"$out/manifest.txt"
done
say "done: $(wc -l <"$out/manifest.txt") certificates in $out"
