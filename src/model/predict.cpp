#include "model/predict.hpp"

#include <fmt/format.h>
#include <torch/csrc/autograd/autograd.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "heatmap/cam.hpp"
#include "heatmap/render.hpp"
#include "image/preprocess.hpp"
#include "model/faithfulness.hpp"
#include "model/torch_errors.hpp"

namespace dermal {

namespace {

torch::Tensor to_probabilities(const torch::Tensor& logits, OutputActivation activation) {
  return activation == OutputActivation::softmax ? torch::softmax(logits, 1) : torch::sigmoid(logits);
}

// Label indices, most probable first.
std::vector<int> ranked(const std::vector<float>& probabilities) {
  std::vector<int> order(probabilities.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return probabilities[a] > probabilities[b]; });
  return order;
}

std::vector<int> classes_to_explain(const PredictOptions& options, const std::vector<int>& ranking,
                                    const ModelDescription& description) {
  if (options.cam_class) {
    const auto& labels = description.labels;
    const auto it = std::find(labels.begin(), labels.end(), *options.cam_class);
    if (it == labels.end())
      throw Error(ErrorCode::unknown_class,
                  fmt::format("class \"{}\" is not one of the model's labels: {}", *options.cam_class, fmt::join(labels, ", ")));
    return {static_cast<int>(it - labels.begin())};
  }
  return {ranking.begin(), ranking.begin() + std::min<std::size_t>(options.cam_top_k, ranking.size())};
}

// Ablation-CAM's weights w_k = (y_c − y_c^(k)) / y_c: y_c^(k) is the logit with
// channel k of the activation (1×K×H×W) ablated, set to 0 if the activation's
// minimum is 0, else to that minimum − 1e7 (pytorch-grad-cam's AblationLayer).
// The ablated copies run through the stages after the CAM layer only, in
// batches of kAblationBatch: the extra memory is that batch's activations
// and the head's intermediates for it.
constexpr int64_t kAblationBatch = 32;

torch::Tensor ablation_weights(const Network& network, const torch::Tensor& activation, int class_index, float logit) {
  c10::InferenceMode inference;
  const torch::Tensor a = activation[0];
  const int64_t channels = a.size(0);
  const float minimum = a.min().item<float>();
  const float ablated = minimum == 0.0f ? 0.0f : minimum - 1e7f;
  std::vector<torch::Tensor> scores;
  for (int64_t first = 0; first < channels; first += kAblationBatch) {
    const int64_t n = std::min(kAblationBatch, channels - first);
    torch::Tensor batch = a.unsqueeze(0).repeat({n, 1, 1, 1});
    for (int64_t i = 0; i < n; ++i) batch[i][first + i].fill_(ablated);
    scores.push_back(run_stages(network.after, batch).select(1, class_index).to(torch::kFloat));
  }
  return (logit - torch::cat(scores)) / logit;
}

// The explained class's probability for a changed input, without autograd.
float probability_of(const Network& network, const torch::Tensor& input, int class_index) {
  c10::InferenceMode inference;
  const torch::Tensor logits = run_stages(network.after, run_stages(network.before, input.unsqueeze(0)));
  return to_probabilities(logits, network.description.output)[0][class_index].item<float>();
}

// The map's Faithfulness for `class_index` (docs/cam-methods.md); `x` is the
// normalised input (1×3×H×W) and `probability` its probability for the class.
Faithfulness faithfulness_of(const Network& network, const torch::Tensor& x, const Heatmap& heatmap,
                             int class_index, float probability) {
  const torch::Tensor input = x[0];
  const torch::Tensor map = map_at_input(heatmap, static_cast<int>(input.size(1)), static_cast<int>(input.size(2)));
  Faithfulness f;
  f.cam_mult_image_change = probability_of(network, input * map, class_index) - probability;
  for (int i = 0; i < 4; ++i)
    f.road[i] = probability_of(network, road_remove(input, map, kRoadPercents[i]), class_index) - probability;
  return f;
}

}  // namespace

Prediction predict_photo(const Network& network, const Image& photo, const PredictOptions& options, bool explain) {
  const ModelDescription& d = network.description;
  std::vector<float> input = preprocess(photo, d);

  Prediction prediction = translate_failures("predicting", [&] {
    Prediction result;
    torch::Tensor x = torch::from_blob(input.data(), {1, 3, d.input_height, d.input_width});
    torch::Tensor activation, logits;
    const bool needs_gradient = explain && cam_method_uses_gradient(options.cam_method);
    if (explain) {
      {
        torch::NoGradGuard no_grad;  // not InferenceMode: the activation must be able to require grad
        activation = run_stages(network.before, x);
      }
      torch::AutoGradMode record(needs_gradient);  // only the stages after the CAM layer are recorded
      activation.requires_grad_(needs_gradient);
      logits = run_stages(network.after, activation);
    } else {
      c10::InferenceMode inference;
      logits = run_stages(network.after, run_stages(network.before, x));
    }
    const torch::Tensor probabilities = to_probabilities(logits.detach(), d.output).contiguous();
    const float* p = probabilities.data_ptr<float>();
    result.probabilities.assign(p, p + d.labels.size());
    for (float value : result.probabilities)
      if (!std::isfinite(value))
        throw Error(ErrorCode::invalid_model, "the network's output is not finite (NaN or Inf) for this image");
    const std::vector<int> order = ranked(result.probabilities);
    for (int i = 0; i < options.top_k && i < static_cast<int>(order.size()); ++i)
      result.top.push_back({order[i], d.labels[order[i]], result.probabilities[order[i]]});

    if (explain) {
      const std::vector<int> classes = classes_to_explain(options, order, d);
      const PixelRect placement = input_window(photo, d).on_picture(photo.width, photo.height);
      for (std::size_t i = 0; i < classes.size(); ++i) {
        torch::Tensor gradient;
        if (needs_gradient) {
          const bool more_to_come = i + 1 < classes.size();
          const torch::Tensor score = explained_score(options.cam_method, logits[0], classes[i]);
          gradient = torch::autograd::grad({score}, {activation}, {}, more_to_come)[0][0];
        }
        const NormalizedMap normalized = normalize_map(
            options.cam_method == CamMethod::ablationcam
                ? weighted_map(ablation_weights(network, activation.detach(), classes[i],
                                                logits.detach()[0][classes[i]].item<float>()),
                               activation.detach()[0], options.eigen_smooth)
                : cam_map(options.cam_method, activation.detach()[0], gradient, options.eigen_smooth));
        Explanation explanation;
        explanation.class_index = classes[i];
        explanation.label = d.labels[classes[i]];
        explanation.cam_method = options.cam_method;
        explanation.heatmap = normalized.map;
        explanation.flat = normalized.flat;
        if (options.faithfulness && !normalized.flat)
          explanation.faithfulness = faithfulness_of(network, x, explanation.heatmap, classes[i],
                                                     result.probabilities[classes[i]]);
        if (options.full_heatmap || options.overlay) {
          const PlacedHeatmap placed(explanation.heatmap, placement, photo.width, photo.height);
          if (options.full_heatmap) explanation.full_heatmap = placed.full();
          if (options.overlay)
            explanation.overlay = encode_image(render_overlay(photo, placed, options.colormap, options.overlay_alpha),
                                               options.overlay_format, options.jpeg_quality);
        }
        result.explanations.push_back(std::move(explanation));
      }
    }
    // Drop the graph, activation and gradients before returning.
    logits.reset();
    activation.reset();
    return result;
  });
  return prediction;
}

}  // namespace dermal
