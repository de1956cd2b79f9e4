// What the spec tests share: the message of a refused spec, and the documented specs of models/.
//
//   CHECK_THAT(spec_error("conv2x"), Catch::Contains("unknown layer"));
//   Sequential m = model_from_spec(documented_spec("resnet8"), {28, 28, 1}, rng);
#pragma once

#include <cstdio>
#include <string>

#include <catch2/catch.hpp>

#include "core/random.h"
#include "layers/model_spec.h"

namespace qnet::testing {

// The SpecError's message for `spec` on `input`, or "" if it builds.
inline std::string spec_error(const std::string& spec, const Shape& input = {28, 28, 1}) {
  Rng rng(1);
  try {
    model_from_spec(spec, input, rng);
  } catch (const SpecError& e) {
    return e.what();
  }
  return "";
}

// The text of models/NAME.spec in the source tree (QNET_SOURCE_DIR, set by tests/CMakeLists.txt).
inline std::string documented_spec(const std::string& name) {
  const std::string path = std::string(QNET_SOURCE_DIR) + "/models/" + name + ".spec";
  std::FILE* f = std::fopen(path.c_str(), "rb");
  REQUIRE(f != nullptr);
  std::string text;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) text.append(buf, n);
  std::fclose(f);
  return text;
}

}  // namespace qnet::testing
