// Catch2 for the tests, major version 2 (Debian 12) or 3 (Debian 13), under
// version 3's names: Approx, Catch::Matchers::ContainsSubstring and Predicate.
// Include it after any LibTorch header (glog's CHECK would replace Catch2's).
#pragma once

#if __has_include(<catch2/catch_all.hpp>)
#include <catch2/catch_all.hpp>
using Catch::Approx;
#else
#include <catch2/catch.hpp>
namespace Catch::Matchers {
inline StdString::ContainsMatcher ContainsSubstring(const std::string& text) { return Contains(text); }
}  // namespace Catch::Matchers
#endif
