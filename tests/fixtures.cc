#include "tests/fixtures.h"

#include "gtest/gtest.h"
#include "loader/model_loader.h"
#include "tests/test_util.h"

namespace masknet::testing {

masknet::testing::v1::ParityFixture ReadParityFixture(const std::string& name) {
  masknet::testing::v1::ParityFixture fixture;
  auto bytes = ReadFile(FixtureRoot() + "/" + name + "/cases.binpb");
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_TRUE(bytes.ok() && fixture.ParseFromString(*bytes)) << "cannot parse fixture " << name;
  return fixture;
}

std::string FixtureModelRoot(const std::string& name) { return FixtureRoot() + "/" + name + "/models"; }

}  // namespace masknet::testing
