// LibTorch's failures as dermal::Error.
#pragma once

#include <fmt/format.h>

#include <exception>
#include <new>
#include <string>

#include "dermal/dermal.hpp"

namespace dermal {

// The informative line of a LibTorch message: a TorchScript error's final
// "RuntimeError: ..." line, else the first line (the rest is a stack trace).
inline std::string torch_message(const std::exception& error) {
  const std::string text = error.what();
  const std::string marker = "RuntimeError: ";
  const std::size_t at = text.rfind(marker);
  const std::size_t start = at == std::string::npos ? 0 : at + marker.size();
  return text.substr(start, text.find('\n', start) - start);
}

// Runs f; dermal::Error passes through, allocation failures become
// out_of_memory and any other exception internal, naming what was being done.
template <typename F>
auto translate_failures(const char* doing, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw Error(ErrorCode::out_of_memory, fmt::format("out of memory while {}", doing));
  } catch (const std::exception& e) {
    throw Error(ErrorCode::internal, fmt::format("LibTorch failed while {}: {}", doing, torch_message(e)));
  }
}

}  // namespace dermal
