#include "dermal/dermal.hpp"

namespace dermal {

Error::Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}

const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::ok: return "ok";
    case ErrorCode::invalid_argument: return "invalid_argument";
    case ErrorCode::io: return "io";
    case ErrorCode::invalid_image: return "invalid_image";
    case ErrorCode::unsupported_image: return "unsupported_image";
    case ErrorCode::image_too_large: return "image_too_large";
    case ErrorCode::invalid_model: return "invalid_model";
    case ErrorCode::model_not_loaded: return "model_not_loaded";
    case ErrorCode::unknown_layer: return "unknown_layer";
    case ErrorCode::unknown_class: return "unknown_class";
    case ErrorCode::out_of_memory: return "out_of_memory";
    case ErrorCode::internal: return "internal";
    case ErrorCode::explain_disabled: return "explain_disabled";
    case ErrorCode::busy: return "busy";
    case ErrorCode::numerics_mismatch: return "numerics_mismatch";
  }
  return "unknown";
}

}  // namespace dermal
