#include "services/common/metric_family.h"

#include <prometheus/metric_type.h>

#include "gtest/gtest.h"

namespace iotauth {
namespace {

TEST(MetricFamilyTest, OneUnlabelledSampleOfTheNamedType) {
  const prometheus::MetricFamily c = CounterFamily("x_total", "Things.", 3);
  EXPECT_EQ(c.name, "x_total");
  EXPECT_EQ(c.help, "Things.");
  EXPECT_EQ(c.type, prometheus::MetricType::Counter);
  ASSERT_EQ(c.metric.size(), 1u);
  EXPECT_TRUE(c.metric[0].label.empty());
  EXPECT_EQ(c.metric[0].counter.value, 3);

  const prometheus::MetricFamily g = GaugeFamily("y_bytes", "Size.", 4096);
  EXPECT_EQ(g.type, prometheus::MetricType::Gauge);
  ASSERT_EQ(g.metric.size(), 1u);
  EXPECT_EQ(g.metric[0].gauge.value, 4096);
  EXPECT_EQ(g.metric[0].counter.value, 0);
}

}  // namespace
}  // namespace iotauth
