#include "model/predict.hpp"

#include <fmt/format.h>
#include <torch/csrc/autograd/autograd.h>

#include <algorithm>
#include <cmath>
#include <iterator>
#include <limits>
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

// Score-CAM's masked copies of the input run through the whole network this
// many at a time, without autograd: the extra memory is the batch's inputs
// and the network's intermediates for them.
constexpr int64_t kScoreCamBatch = 8;
// The ε in Score-CAM's mask scaling (M − min) / (max − min + ε), as in pytorch-grad-cam.
constexpr float kScoreCamEpsilon = 1e-8f;

// Score-CAM's logits (K×N): row k is the network's output for the input x
// (1×3×H×W) multiplied by channel k of the activation (1×K×h×w), stretched to
// H×W (bilinear, align_corners true, as torch's UpsamplingBilinear2d that
// pytorch-grad-cam uses) and scaled by (M − min) / (max − min + kScoreCamEpsilon).
torch::Tensor score_cam_logits(const Network& network, const torch::Tensor& x, const torch::Tensor& activation) {
  c10::InferenceMode inference;
  const torch::Tensor a = activation[0].to(torch::kFloat);
  const int64_t channels = a.size(0);
  const std::vector<int64_t> size{x.size(2), x.size(3)};
  std::vector<torch::Tensor> logits;
  for (int64_t first = 0; first < channels; first += kScoreCamBatch) {
    const int64_t n = std::min(kScoreCamBatch, channels - first);
    torch::Tensor masks = torch::nn::functional::interpolate(
        a.slice(0, first, first + n).unsqueeze(1),
        torch::nn::functional::InterpolateFuncOptions().size(size).mode(torch::kBilinear).align_corners(true));
    const torch::Tensor values = masks.view({n, -1});
    const torch::Tensor lo = std::get<0>(values.min(1)).view({n, 1, 1, 1});
    const torch::Tensor hi = std::get<0>(values.max(1)).view({n, 1, 1, 1});
    masks = (masks - lo) / (hi - lo + kScoreCamEpsilon);
    logits.push_back(run_stages(network.after, run_stages(network.before, x * masks)).to(torch::kFloat));
  }
  return torch::cat(logits);
}

// What one input (the photo's, or an augmented copy of it) gives the maps:
// the activation (1×K×h×w) and logits (1×N), recorded when the method needs
// a gradient.
struct Pass : SplitForward {
  torch::Tensor masked_logits;  // scorecam only: score_cam_logits
};

// Runs x (1×3×H×W) through the network split at the CAM layer for `method`.
Pass run_pass(const Network& network, const torch::Tensor& x, CamMethod method) {
  Pass pass{run_split(network, x, cam_method_uses_gradient(method)), {}};
  if (method == CamMethod::scorecam) pass.masked_logits = score_cam_logits(network, x, pass.activation.detach());
  return pass;
}

// The un-normalised map (h×w) of the options' method for `class_index` from
// one pass; `keep_graph`: another class will need the pass's graph.
torch::Tensor raw_map(const Network& network, const PredictOptions& options, const Pass& pass, int class_index,
                      bool keep_graph) {
  const torch::Tensor activation = pass.activation.detach();
  switch (options.cam_method) {
    case CamMethod::ablationcam:
      return weighted_map(
          ablation_weights(network, activation, class_index, pass.logits.detach()[0][class_index].item<float>()),
          activation[0], options.eigen_smooth);
    case CamMethod::scorecam:
      return weighted_map(torch::softmax(pass.masked_logits.select(1, class_index), 0), activation[0],
                          options.eigen_smooth);
    default:
      break;
  }
  torch::Tensor gradient;
  if (cam_method_uses_gradient(options.cam_method)) {
    const torch::Tensor score = explained_score(options.cam_method, pass.logits[0], class_index);
    gradient = torch::autograd::grad({score}, {pass.activation}, {}, keep_graph)[0][0];
  }
  return cam_map(options.cam_method, activation[0], gradient, options.eigen_smooth);
}

// aug_smooth's copies of the input: flipped left-right or not × these factors
// (pytorch-grad-cam's test-time augmentations).
constexpr float kAugmentFactors[3] = {0.9f, 1.0f, 1.1f};

// One copy's map for the mean: ReLU(m) scaled by the min and max of its
// stretch to height × width (bilinear, half-pixel centres), so that the
// stretch spans [0, 1], as pytorch-grad-cam scales each copy's map at the
// input's size; all zeros when that stretch is flat (is_flat).
// Stretching is linear: the stretch of the mean is the mean of the stretches.
torch::Tensor scaled_at_input(const torch::Tensor& map, int64_t height, int64_t width) {
  torch::NoGradGuard no_grad;
  const torch::Tensor m = torch::relu(map.to(torch::kFloat));
  const torch::Tensor stretched = torch::nn::functional::interpolate(
      m.unsqueeze(0).unsqueeze(0), torch::nn::functional::InterpolateFuncOptions()
                                       .size(std::vector<int64_t>{height, width})
                                       .mode(torch::kBilinear)
                                       .align_corners(false));
  const float lo = stretched.min().item<float>(), hi = stretched.max().item<float>();
  if (!std::isfinite(lo) || !std::isfinite(hi)) return torch::full_like(m, std::numeric_limits<float>::quiet_NaN());
  if (is_flat(lo, hi)) return torch::zeros_like(m);
  return (m - lo) / (hi - lo);
}

// aug_smooth: for each class, the mean over the six copies of scaled_at_input
// of the copy's map, flipped back, shifted to a minimum of 0. `identity` is
// the pass of the input itself (copy: no flip, factor 1), used and released.
std::vector<torch::Tensor> aug_smoothed_maps(const Network& network, const PredictOptions& options,
                                             const torch::Tensor& x, const std::vector<int>& classes, Pass& identity) {
  const int64_t height = x.size(2), width = x.size(3);
  std::vector<torch::Tensor> sums(classes.size());
  const auto add = [&](const Pass& pass, bool flipped) {
    for (std::size_t i = 0; i < classes.size(); ++i) {
      torch::Tensor map = scaled_at_input(raw_map(network, options, pass, classes[i], i + 1 < classes.size()),
                                          height, width);
      if (flipped) map = map.flip({1});
      sums[i] = sums[i].defined() ? sums[i] + map : map;
    }
  };
  add(identity, false);
  identity = Pass();  // its graph is not needed any more
  for (const bool flipped : {false, true})
    for (const float factor : kAugmentFactors) {
      if (!flipped && factor == 1.0f) continue;  // the identity, done above
      torch::Tensor copy;
      {
        torch::NoGradGuard no_grad;
        copy = x * factor;
        if (flipped) copy = copy.flip({3});
      }
      add(run_pass(network, copy, options.cam_method), flipped);
    }
  for (torch::Tensor& sum : sums) {
    torch::NoGradGuard no_grad;
    sum = sum / static_cast<float>(2 * std::size(kAugmentFactors));
    sum = sum - sum.min();
  }
  return sums;
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
    Pass pass;
    if (explain) {
      pass = run_pass(network, x, options.cam_method);
    } else {
      c10::InferenceMode inference;
      pass.logits = run_stages(network.after, run_stages(network.before, x));
    }
    const torch::Tensor probabilities = to_probabilities(pass.logits.detach(), d.output).contiguous();
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
      std::vector<torch::Tensor> maps;
      if (options.aug_smooth) {
        maps = aug_smoothed_maps(network, options, x, classes, pass);
      } else {
        for (std::size_t i = 0; i < classes.size(); ++i)
          maps.push_back(raw_map(network, options, pass, classes[i], i + 1 < classes.size()));
      }
      pass = Pass();  // drop the graph, activation and gradients before the rest
      for (std::size_t i = 0; i < classes.size(); ++i) {
        const NormalizedMap normalized = normalize_map(maps[i]);
        maps[i].reset();
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
    return result;
  });
  return prediction;
}

}  // namespace dermal
