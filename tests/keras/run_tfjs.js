// Runs a model written by tools/make_keras_fixtures.py with TensorFlow.js
// (tfjs-layers on the pure-JS CPU backend) and writes to OUT.json, for each input:
// the logits (the last layer's pre-activation) and, with --cam LAYER, the
// Grad-CAM map at LAYER as Keras apps compute it with GradientTape: gradients
// of the class logit w.r.t. the layer's output, averaged over height and width
// as channel weights, ReLU of the weighted sum of the channels.
//
//   node run_tfjs.js MODEL_DIR INPUTS.f32 N OUT.json [--cam LAYER] [--classes c0,c1,...]
//
// INPUTS.f32: N images, float32 little-endian, NHWC at the model's input size.
'use strict';
const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs-core');
require('@tensorflow/tfjs-backend-cpu');
const tfl = require('@tensorflow/tfjs-layers');

// tfjs-layers has no hard_swish activation (its 'hardSigmoid' is Keras 2's
// clip(0.2 x + 0.5, 0, 1)). This layer is Keras 3's documented definition,
// hard_swish(x) = x * hard_sigmoid(x) with hard_sigmoid(x) = relu6(x + 3) / 6;
// make_keras_fixtures.py writes Activation("hard_swish") as it. Every other
// layer is tfjs-layers' own.
class KerasHardSwish extends tfl.layers.Layer {
  call(inputs) {
    return tf.tidy(() => {
      const x = Array.isArray(inputs) ? inputs[0] : inputs;
      return tf.mul(x, tf.div(tf.relu6(tf.add(x, 3)), 6));
    });
  }

  static get className() {
    return 'KerasHardSwish';
  }
}
tf.serialization.registerClass(KerasHardSwish);

function option(name) {
  const at = process.argv.indexOf(name);
  return at > 0 ? process.argv[at + 1] : null;
}

async function main() {
  const [directory, inputsPath, countText, output] = process.argv.slice(2);
  const camLayer = option('--cam');
  const classes = option('--classes') ? option('--classes').split(',').map(Number) : null;
  await tf.setBackend('cpu');
  const json = JSON.parse(fs.readFileSync(path.join(directory, 'model.json'), 'utf8'));
  const bin = fs.readFileSync(path.join(directory, 'weights.bin'));
  const model = await tfl.loadLayersModel(tf.io.fromMemory({
    modelTopology: json.modelTopology,
    weightSpecs: json.weightsManifest[0].weights,
    weightData: bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength),
  }));
  const topology = json.modelTopology.config.layers;
  const shape = topology[0].config.batch_input_shape.slice(1);
  const count = Number(countText);
  const raw = fs.readFileSync(inputsPath);
  const inputs = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
  const perImage = shape[0] * shape[1] * shape[2];
  if (inputs.length !== count * perImage) throw new Error(`expected ${count * perImage} floats`);

  const byName = new Map(model.layers.map((layer) => [layer.name, layer]));
  const order = topology.slice(1);
  const last = order[order.length - 1];

  // Runs the layers from `start` on, given the tensors already known; returns
  // the logits: the last Dense's matmul + bias, without its activation.
  function runFrom(start, values) {
    for (let i = start; i < order.length; i++) {
      const entry = order[i];
      const layer = byName.get(entry.name);
      const args = entry.inbound_nodes[0].map((ref) => values.get(ref[0]));
      if (entry === last) {
        if (entry.class_name !== 'Dense') throw new Error('the last layer must be a Dense');
        const [kernel, bias] = layer.getWeights();
        const y = tf.matMul(args[0], kernel);
        return bias ? tf.add(y, bias) : y;
      }
      values.set(entry.name, layer.apply(args.length === 1 ? args[0] : args, {training: false}));
    }
    throw new Error('no output');
  }

  const results = [];
  for (let n = 0; n < count; n++) {
    const result = tf.tidy(() => {
      const x = tf.tensor(inputs.subarray(n * perImage, (n + 1) * perImage), [1, ...shape]);
      const values = new Map([[topology[0].name, x]]);
      const logits = runFrom(0, values);
      const out = {logits: Array.from(logits.dataSync())};
      if (camLayer) {
        const at = order.findIndex((entry) => entry.name === camLayer);
        if (at < 0) throw new Error(`no layer ${camLayer}`);
        const activation = values.get(camLayer);
        const target = classes ? classes[n] : tf.argMax(logits, 1).dataSync()[0];
        const logit = (a) => {
          const copy = new Map(values);
          copy.set(camLayer, a);
          return tf.sum(tf.slice(runFrom(at + 1, copy), [0, target], [1, 1]));
        };
        const gradients = tf.grad(logit)(activation);
        const weights = tf.mean(gradients, [1, 2]);                       // [1, C]
        const cam = tf.relu(tf.sum(tf.mul(activation, tf.reshape(weights, [1, 1, 1, -1])), 3));
        out.cam_class = target;
        out.cam_shape = cam.shape.slice(1);
        out.cam = Array.from(cam.dataSync());
      }
      return out;
    });
    results.push(result);
  }
  fs.writeFileSync(output, JSON.stringify(results));
}

main().catch((error) => {
  process.stderr.write(`run_tfjs: ${error.stack || error}\n`);
  process.exit(1);
});
