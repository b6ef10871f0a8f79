#ifndef MASKNET_TESTS_FIXTURES_H_
#define MASKNET_TESTS_FIXTURES_H_

#include <string>

#include "parity_fixture.pb.h"

namespace masknet::testing {

// Scores must equal the reference within this, per probability.
inline constexpr float kParityTolerance = 1e-5f;

// tests/fixtures/<name>/cases.binpb.
masknet::testing::v1::ParityFixture ReadParityFixture(const std::string& name);

// tests/fixtures/<name>/models: a model root holding the fixture's model.
std::string FixtureModelRoot(const std::string& name);

}  // namespace masknet::testing

#endif  // MASKNET_TESTS_FIXTURES_H_
