// One unlabelled sample as a Prometheus metric family, for collectables that read
// their value at scrape time (a counter kept elsewhere, a size measured on demand).
#pragma once

#include <prometheus/client_metric.h>
#include <prometheus/metric_family.h>
#include <prometheus/metric_type.h>

#include <string>
#include <utility>

namespace iotauth {

inline prometheus::MetricFamily CounterFamily(std::string name, std::string help, double value) {
  prometheus::ClientMetric m;
  m.counter.value = value;
  return {std::move(name), std::move(help), prometheus::MetricType::Counter, {m}};
}

inline prometheus::MetricFamily GaugeFamily(std::string name, std::string help, double value) {
  prometheus::ClientMetric m;
  m.gauge.value = value;
  return {std::move(name), std::move(help), prometheus::MetricType::Gauge, {m}};
}

}  // namespace iotauth
