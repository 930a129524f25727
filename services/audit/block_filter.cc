#include "services/audit/block_filter.h"

#include <algorithm>
#include <array>

namespace iotauth::audit {
namespace {

constexpr uint64_t kFnvBasis = 14695981039346656037ULL;

uint64_t FnvUpdate(uint64_t h, absl::string_view data) {
  for (char c : data) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ULL;
  return h;
}

// SplitMix64 finalizer: spreads FNV's weak low bits.
uint64_t Finalize(uint64_t h) {
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebULL;
  h ^= h >> 31;
  return h;
}

// The probe positions of one key: double hashing (Kirsch-Mitzenmacher) from the
// two halves of the 64-bit hash of (kind byte, 0x00, id).
std::array<uint32_t, BlockFilter::kProbes> Probes(char kind, absl::string_view id) {
  const char prefix[2] = {kind, '\0'};
  const uint64_t h = Finalize(FnvUpdate(FnvUpdate(kFnvBasis, absl::string_view(prefix, 2)), id));
  const auto h1 = static_cast<uint32_t>(h);
  const auto h2 = static_cast<uint32_t>(h >> 32) | 1U;  // odd: the probes differ
  std::array<uint32_t, BlockFilter::kProbes> out{};
  for (int i = 0; i < BlockFilter::kProbes; ++i) {
    out[i] = (h1 + static_cast<uint32_t>(i) * h2) % BlockFilter::kBits;
  }
  return out;
}

}  // namespace

uint64_t StableHash64(absl::string_view data) { return Finalize(FnvUpdate(kFnvBasis, data)); }

BlockFilter::BlockFilter() : bits_(kBits / 8, '\0') {}

absl::StatusOr<BlockFilter> BlockFilter::FromBytes(absl::string_view bytes) {
  if (bytes.size() != kBits / 8) {
    return absl::InvalidArgumentError("audit block filter has the wrong size");
  }
  BlockFilter f;
  f.bits_.assign(bytes.data(), bytes.size());
  return f;
}

void BlockFilter::Add(char kind, absl::string_view id) {
  for (uint32_t bit : Probes(kind, id)) {
    bits_[bit / 8] =
        static_cast<char>(static_cast<unsigned char>(bits_[bit / 8]) | (1U << (bit % 8)));
  }
}

bool BlockFilter::MayContain(char kind, absl::string_view id) const {
  const auto probes = Probes(kind, id);
  return std::all_of(probes.begin(), probes.end(), [this](uint32_t bit) {
    return (static_cast<unsigned char>(bits_[bit / 8]) & (1U << (bit % 8))) != 0;
  });
}

}  // namespace iotauth::audit
