// One request through a loaded network: preprocess -> forward -> explain -> render.
#pragma once

#include "dermal/dermal.hpp"
#include "model/network.hpp"

namespace dermal {

// Classifies an upright photo and, with `explain`, makes the heatmaps and
// overlays the options ask for. Every tensor of the request (input,
// activation, graph, gradients) is freed before it returns. Options must
// have passed check_options. Throws Error.
Prediction predict_photo(const Network& network, const Image& photo, const PredictOptions& options, bool explain);

}  // namespace dermal
