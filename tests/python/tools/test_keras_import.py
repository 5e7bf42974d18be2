"""python3 -m dermal.convert keras: imported models against TensorFlow.js, through the
library, and every refusal.

The parity cases write each family's Keras files and its TensorFlow.js model
from one description (tools/make_keras_fixtures.py), import the Keras file and
compare logits and the Grad-CAM recipe of Keras apps with tfjs-layers
(tests/keras, installed by `npm ci --prefix tests/keras`).
"""
import os

import h5py
import numpy as np
import pytest
import torch

import keras_parity
import make_keras_fixtures as fixtures
from make_keras_fixtures import Maker, Model

ROOT = keras_parity.ROOT


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return str(tmp_path_factory.mktemp("keras"))


_rows = {}


def parity_row(case, work):
    """The parity row of `case`, computed once per test session."""
    if case not in _rows:
        torch.set_num_threads(1)
        _rows[case] = keras_parity.compare(*case, work, keep_model=True)
    return _rows[case]


def check_parity(row):
    assert row["logit_range"] > 1e-2, "logits too flat for the comparison to mean anything"
    assert row["max_dlogit"] <= 1e-4 * row["logit_range"], keras_parity.table([row])
    assert row["top1_agree"] == row["photos"]
    assert row["cam_shape_equal"]
    assert row["cam_max"] > 0
    assert row["max_dcam"] <= 1e-4 * row["cam_max"], keras_parity.table([row])


@pytest.mark.parametrize("case", keras_parity.cases(with_300=False), ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}")
def test_logits_and_gradcam_equal_tfjs(case, work):
    check_parity(parity_row(case, work))


def test_efficientnet_v2_s_at_300_equals_tfjs(work):
    check_parity(parity_row(("efficientnet_v2_s", "keras3.keras", 300), work))


def _stages(path):
    return keras_parity.modelfile.load_description(path)


def test_stages_are_named_after_keras_layers(work):
    description = _stages(parity_row(("efficientnet_v2_s", "keras3.keras", 64), work)["model_path"])
    stages = description["stages"]
    for name in ("stem_activation", "block1b_add", "block6o_add", "top_conv", "top_bn", "top_activation"):
        assert name in stages
    assert stages.index("top_conv") + 1 == stages.index("top_bn")  # the convolution's output, before top_bn
    assert stages[-1] == "dense" and description["output"] == "softmax"
    assert "out_relu" in _stages(parity_row(("teachable_machine", "keras2.h5", 64), work)["model_path"])["stages"]
    custom = _stages(parity_row(("custom_cnn", "keras3.keras", 64), work)["model_path"])
    assert custom["cam_layer"] == "conv2d_2"
    assert custom["stages"][:3] == ["random_flip", "conv2d", "batch_normalization"]


def test_default_cam_layer_is_the_last_spatial_layer(small_cnn, tmp_path):
    out = str(tmp_path / "default.pt")
    result = run_importer(small_cnn, out)
    assert result.returncode == 0, result.stderr
    assert _stages(out)["cam_layer"] == "conv2d_2"


def test_through_the_library_probabilities_and_gradcam_equal_tfjs(work, dermal):
    """The imported file loaded by the C library (Python package) gives
    softmax (or sigmoid) of the tfjs logits for photos at the model's size, and
    its raw Grad-CAM map equals the tfjs recipe's, min-max normalised as
    dermal normalises every map."""
    for case in (("custom_cnn", "keras3.keras", 64), ("teachable_machine", "keras2.h5", 64),
                 ("coverage", "keras3.h5", 64)):
        row = parity_row(case, work)
        with dermal.Model(row["model_path"]) as model:
            labels = model.labels
            for pixels, logits, cam, target in zip(row["pixels"], row["tfjs_logits"], row["tfjs_cams"],
                                                   row["cam_classes"]):
                result = model.predict(np.ascontiguousarray(pixels, dtype=np.uint8), cam_class=labels[target])
                got = np.array([result.probabilities[label] for label in labels])
                if row["output"] == "sigmoid":
                    expected = 1 / (1 + np.exp(-logits))
                else:
                    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
                assert np.abs(got - expected).max() <= 1e-4, (case, got, expected)
                normalised = (cam - cam.min()) / (cam.max() - cam.min())
                explanation = result.explanations[0]
                raw = explanation.heatmap
                assert raw.shape == normalised.shape and not explanation.flat
                assert np.abs(raw - normalised).max() <= 1e-4, case



def test_trained_demo_as_keras_imports_to_the_demo_models_scores_and_maps(tmp_path):
    """The trained demo model written as a Keras file (make_keras_fixtures' trained_demo: Rescaling and
    Normalization inside, explicit padding) and imported: on held-out lesion photos its logits and
    the Grad-CAM recipe at its last block equal those of examples/data/demo-model.pt on the same pixels."""
    import lesions
    import train_demo
    size = train_demo.SIZE
    model = fixtures.trained_demo(size)
    keras_file, imported = str(tmp_path / "demo.keras"), str(tmp_path / "demo-keras.pt")
    fixtures.write_archive(model, keras_file, "keras3")
    result = run_importer(keras_file, imported, labels=",".join(lesions.CLASSES))
    assert result.returncode == 0, result.stderr
    assert _stages(imported)["cam_layer"] == "block5_1_relu"
    pixels, truth, _ = train_demo.make_set(train_demo.HELDOUT_SEED, 12)
    cam_classes = truth.tolist()
    got_logits, got_cams = keras_parity.torch_logits_and_cam(
        imported, pixels.permute(0, 2, 3, 1).float().numpy(), "block5_1_relu", cam_classes)
    demo = _stages(fixtures.DEMO_MODEL)
    expected_logits, expected_cams = keras_parity.torch_logits_and_cam(
        fixtures.DEMO_MODEL, train_demo.normalize(pixels).permute(0, 2, 3, 1).numpy(), demo["cam_layer"], cam_classes)
    for logits, cam, expected, expected_cam, target in zip(got_logits, got_cams, expected_logits, expected_cams,
                                                          cam_classes):
        assert np.abs(logits - expected).max() <= 1e-4 * np.ptp(expected)
        assert logits.argmax() == expected.argmax() == target  # trained: right on these photos
        assert cam.shape == expected_cam.shape and expected_cam.max() > 0
        assert np.abs(cam - expected_cam).max() <= 1e-4 * expected_cam.max()


# ---------------------------------------------------------------- options and description

def run_importer(source, out, *options, labels="a,b,c,d,e,f,g"):
    if labels is not None:
        options += ("--labels", labels)
    return keras_parity.convert_command.run("keras", source, "--out", out, *options)


@pytest.fixture(scope="module")
def small_cnn(work):
    path = os.path.join(work, "small.keras")
    fixtures.write_archive(fixtures.custom_cnn(32), path, "keras3")
    return path


def test_labels_file_keeps_spaces_and_commas(small_cnn, tmp_path):
    names = ["Acne and Rosacea", "Scabies Lyme Disease and other Infestations and Bites",
             "Eczema, atopic", "Melanoma Skin Cancer Nevi and Moles", "Psoriasis, Lichen Planus",
             "Tinea Ringworm Candidiasis", "Warts Molluscum and other Viral Infections"]
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("\n".join(names) + "\n", encoding="utf-8")
    out = str(tmp_path / "m.pt")
    result = run_importer(small_cnn, out, "--labels-file", str(labels_file), labels=None)
    assert result.returncode == 0, result.stderr
    assert _stages(out)["labels"] == names


def test_preprocessing_options_are_recorded(small_cnn, tmp_path):
    out = str(tmp_path / "m.pt")
    result = run_importer(small_cnn, out, "--resample", "lanczos", "--resize", "fit",
                          "--scale", str(1 / 127.5), "--offset", "-1", "--width", "32", "--height", "32")
    assert result.returncode == 0, result.stderr
    spec = _stages(out)["input"]
    assert spec["resample"] == "lanczos" and spec["resize"] == "fit"
    assert (spec["width"], spec["height"]) == (32, 32)
    assert spec["scale"] == pytest.approx(1 / 127.5) and spec["mean"] == [1.0] * 3 and spec["std"] == [1.0] * 3
    result = run_importer(small_cnn, out, "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225",
                          "--resize", "center_crop")
    assert result.returncode == 0, result.stderr
    spec = _stages(out)["input"]
    assert spec["scale"] == pytest.approx(1 / 255) and spec["mean"] == [0.485, 0.456, 0.406]
    assert spec["resize"] == "center_crop" and spec["resample"] == "bilinear"


def _activation_model(activation, size=8):
    """Input -> Activation -> GAP -> Dense(identity): logits are the channel means."""
    m = Model("model", "Functional", (size, size, 3))
    Maker.simple(m, "Activation", "act", activation=activation)
    Maker.simple(m, "GlobalAveragePooling2D", "gap", data_format="channels_last", keepdims=False)
    m.layer("Dense", "dense", {"units": 3, "activation": "linear", "use_bias": True}, None,
            [("kernel", np.eye(3, dtype=np.float32), True), ("bias", np.zeros(3, np.float32), True)])
    return m


@pytest.mark.parametrize("activation,writer,formula", [
    ("hard_sigmoid", "keras3", lambda x: np.clip(x + 3, 0, 6) / 6),
    ("hard_swish", "keras3", lambda x: x * np.clip(x + 3, 0, 6) / 6),
    ("hard_silu", "keras3", lambda x: x * np.clip(x + 3, 0, 6) / 6),
    ("hard_sigmoid", "keras2", lambda x: np.clip(0.2 * x + 0.5, 0, 1)),
    ("swish", "keras2", lambda x: x / (1 + np.exp(-x))),
    ("relu6", "keras3", lambda x: np.clip(x, 0, 6)),
])
def test_activations_as_keras_defines_them(activation, writer, formula, tmp_path):
    source = str(tmp_path / "act.keras")
    if writer == "keras3":
        fixtures.write_archive(_activation_model(activation), source, "keras3")
    else:
        fixtures.write_legacy_h5(_activation_model(activation), source, 2)
    out = str(tmp_path / "act.pt")
    result = run_importer(source, out, labels="r,g,b")
    assert result.returncode == 0, result.stderr
    x = np.random.default_rng(0).uniform(-8, 8, (1, 8, 8, 3)).astype(np.float32)
    module = torch.jit.load(out)
    got = module(torch.from_numpy(x).permute(0, 3, 1, 2))[0].numpy()
    np.testing.assert_allclose(got, formula(x.astype(np.float64)).mean(axis=(1, 2))[0], atol=1e-5)


def test_bgr_reverses_the_channels_after_rgb_offsets(tmp_path):
    """Caffe mode: the model sees bgr(pixel) - [103.939, 116.779, 123.68]; dermal
    subtracts the RGB offsets and the imported model reverses the channels."""
    source = str(tmp_path / "act.keras")
    fixtures.write_archive(_activation_model("linear"), source, "keras3")
    out = str(tmp_path / "bgr.pt")
    result = run_importer(source, out, "--bgr", "--offset=-123.68,-116.779,-103.939", labels="b,g,r")
    assert result.returncode == 0, result.stderr
    spec = _stages(out)["input"]
    assert spec["mean"] == [123.68, 116.779, 103.939] and spec["scale"] == 1.0
    rgb = np.random.default_rng(0).uniform(0, 255, (1, 8, 8, 3)).astype(np.float32)
    normalised = (rgb - np.array(spec["mean"], np.float32)) / np.array(spec["std"], np.float32)
    got = torch.jit.load(out)(torch.from_numpy(normalised).permute(0, 3, 1, 2))[0].numpy()
    keras_input = rgb[..., ::-1] - np.array([103.939, 116.779, 123.68], np.float32)
    np.testing.assert_allclose(got, keras_input.mean(axis=(1, 2))[0], rtol=1e-5, atol=1e-3)


def test_stage_names_are_sanitised_for_torchscript(tmp_path):
    k = Maker(0)
    m = Model("model", "Functional", (16, 16, 3))
    k.conv(m, "conv-1", 4, 3, 3)
    Maker.simple(m, "Activation", "eval", activation="relu")
    Maker.simple(m, "GlobalAveragePooling2D", "gap", data_format="channels_last", keepdims=False)
    k.dense(m, "dense", 2, 4, activation="softmax")
    source = str(tmp_path / "names.keras")
    fixtures.write_archive(m, source, "keras3")
    out = str(tmp_path / "names.pt")
    result = run_importer(source, out, "--cam-layer", "conv-1", labels="a,b")
    assert result.returncode == 0, result.stderr
    description = _stages(out)
    assert description["stages"] == ["conv_1", "eval_", "gap", "dense"]
    assert description["cam_layer"] == "conv_1"
    assert "conv-1 -> conv_1" in result.stdout and "eval -> eval_" in result.stdout


def test_only_tensors_made_in_a_stage_are_overwritten_in_place(tmp_path):
    """A residual block's swish and Add overwrite what the block made and
    nothing else reads (no output allocated, as torchvision's networks do);
    a stage never overwrites its input, which may be the Grad-CAM activation."""
    k = Maker(0)
    m = Model("model", "Functional", (16, 16, 3))
    k.conv(m, "stem", 8, 3, 3)
    block_input = Maker.simple(m, "Activation", "stem_swish", activation="swish")  # a stage of its own
    k.conv(m, "conv", 8, 3, 8)
    k.bn(m, "bn", 8)
    Maker.simple(m, "Activation", "swish", activation="swish")
    k.conv(m, "project", 8, 1, 8)
    k.bn(m, "project_bn", 8)
    Maker.simple(m, "Add", "add", inputs=["project_bn", block_input])
    Maker.simple(m, "GlobalAveragePooling2D", "gap", data_format="channels_last", keepdims=False)
    k.dense(m, "dense", 2, 8, activation="softmax")
    source = str(tmp_path / "residual.keras")
    fixtures.write_archive(m, source, "keras3")
    out = str(tmp_path / "residual.pt")
    result = run_importer(source, out, labels="a,b")
    assert result.returncode == 0, result.stderr
    assert _stages(out)["stages"] == ["stem", "stem_swish", "add", "gap", "dense"]
    module = torch.jit.load(out)
    block = str(module.add.inlined_graph)
    assert "aten::silu_" in block and "aten::add_" in block
    assert "aten::silu_" not in str(module.stem_swish.inlined_graph)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        stem = module.stem(x)
        kept = stem.clone()
        activated = module.stem_swish(stem)
        assert torch.equal(stem, kept)
        kept = activated.clone()
        module.add(activated)
        assert torch.equal(activated, kept)


# ---------------------------------------------------------------- refusals

def assert_refused(result, out, *fragments):
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("python3 -m dermal.convert keras: error: ") and "nothing written" in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    assert not os.path.exists(out)
    leftovers = [n for n in os.listdir(os.path.dirname(out)) if n.startswith(keras_parity.modelfile.TEMPORARY_PREFIX)]
    assert not leftovers


def _cnn_with(extra_entry=None, activation=None):
    m = fixtures.custom_cnn(32)
    if activation:
        m.entries[1]["config"]["activation"] = activation
    if extra_entry:
        m.entries.insert(2, extra_entry)
    return m


LAMBDA = {"class_name": "Lambda", "name": "lambda", "inputs": [], "weights": [],
          "config": {"name": "lambda", "function": ["4wEAAAAAAAAAAAAAAAEAAAACAAAAQwAAAHMIAAAAfABkARQAUwA=", None, None],
                     "function_type": "lambda", "module": "__main__", "output_shape": None, "arguments": {}}}


@pytest.mark.parametrize("entry,fragments", [
    (LAMBDA, ["'lambda'", "Lambda", "never runs"]),
    ({"class_name": "MyAttention", "name": "my_attention", "inputs": [], "weights": [],
      "config": {"name": "my_attention"}}, ["'my_attention'", "'MyAttention'", "custom"]),
    ({"class_name": "KerasLayer", "name": "keras_layer", "inputs": [], "weights": [],
      "config": {"name": "keras_layer", "handle": "https://tfhub.dev/x/1"}}, ["'keras_layer'", "TensorFlow Hub"]),
])
def test_refuses_layers_it_cannot_convert(entry, fragments, tmp_path):
    source = str(tmp_path / "bad.keras")
    fixtures.write_archive(_cnn_with(entry), source, "keras3")
    out = str(tmp_path / "bad.pt")
    assert_refused(run_importer(source, out), out, *fragments)


def _hard_sigmoid_model(style):
    """x -> (x + 3) -> ReLU(6) -> x * (1/6) as keras.applications' MobileNetV3
    writes it (Keras 3: operations on tensors; Keras 2: TFOpLambda), then GAP
    and an identity Dense."""
    m = Model("model", "Functional", (8, 8, 3))
    for name, function, keras3_class, constant in (("add", "__operators__.add", "Add", 3.0),
                                                   ("relu", None, None, None),
                                                   ("multiply", "math.multiply", "Multiply", 1.0 / 6.0)):
        if function is None:
            Maker.simple(m, "ReLU", name, max_value=6.0, negative_slope=0.0, threshold=0.0)
        elif style == "keras3":
            m.layer(keras3_class, name, {}, None)
            m.entries[-1].update(module="keras.src.ops.numpy", constant_args=[constant])
        else:
            m.layer("TFOpLambda", name, {"function": function}, None)
            m.entries[-1].update(call_kwargs={"y": constant, "name": None})
    Maker.simple(m, "GlobalAveragePooling2D", "gap", data_format="channels_last", keepdims=False)
    m.layer("Dense", "dense", {"units": 3, "activation": "linear", "use_bias": True}, None,
            [("kernel", np.eye(3, dtype=np.float32), True), ("bias", np.zeros(3, np.float32), True)])
    return m


@pytest.mark.parametrize("style", ["keras3", "keras2"])
def test_tensor_and_number_arithmetic_outside_layers(style, tmp_path):
    source = str(tmp_path / "ops.keras")
    if style == "keras3":
        fixtures.write_archive(_hard_sigmoid_model(style), source, "keras3")
    else:
        fixtures.write_legacy_h5(_hard_sigmoid_model(style), source, 2)
    out = str(tmp_path / "ops.pt")
    result = run_importer(source, out, labels="r,g,b")
    assert result.returncode == 0, result.stderr
    x = np.random.default_rng(0).uniform(-8, 8, (1, 8, 8, 3)).astype(np.float32)
    got = torch.jit.load(out)(torch.from_numpy(x).permute(0, 3, 1, 2))[0].numpy()
    np.testing.assert_allclose(got, (np.clip(x + 3, 0, 6) / 6).mean(axis=(1, 2))[0], atol=1e-5)


def test_refuses_keras3_operations_outside_layers(tmp_path):
    """Other operations on tensors, and constants passed to layers, are refused:
    read as a one-input Add they would be silently wrong."""
    for module, constant_args, fragments in (
            ("keras.src.ops.numpy", [3.0, 2.0], ["'add'", "keras.src.ops.numpy", "outside any layer"]),
            ("keras.layers", [3.0], ["'add'", "constant argument", "3.0"]),
            ("keras.layers", [], ["'add'", "at least two inputs"])):
        m = Model("model", "Functional", (16, 16, 3))
        Maker(0).conv(m, "conv", 4, 3, 3)
        m.layer("Add", "add", {}, None)
        m.entries[-1].update(module=module, constant_args=constant_args)
        Maker.simple(m, "GlobalAveragePooling2D", "gap", data_format="channels_last", keepdims=False)
        Maker(0).dense(m, "dense", 2, 4, activation="softmax")
        source = str(tmp_path / "ops.keras")
        fixtures.write_archive(m, source, "keras3")
        out = str(tmp_path / "bad.pt")
        assert_refused(run_importer(source, out, labels="a,b"), out, *fragments)


def test_refuses_malformed_layer_config(tmp_path):
    m = fixtures.custom_cnn(32)
    del m.entries[4]["config"]["filters"]  # conv2d_1
    source = str(tmp_path / "bad.keras")
    fixtures.write_archive(m, source, "keras3")
    out = str(tmp_path / "bad.pt")
    assert_refused(run_importer(source, out), out, "'conv2d_1'", "malformed", "filters")


def test_refuses_unknown_activation(tmp_path):
    source = str(tmp_path / "bad.h5")
    fixtures.write_legacy_h5(_cnn_with(activation="swishy"), source, 2)
    out = str(tmp_path / "bad.pt")
    assert_refused(run_importer(source, out), out, "'conv2d'", "unknown activation 'swishy'")


def test_refuses_truncated_zip(small_cnn, tmp_path):
    data = open(small_cnn, "rb").read()
    source = str(tmp_path / "truncated.keras")
    with open(source, "wb") as f:
        f.write(data[:len(data) // 2])
    out = str(tmp_path / "bad.pt")
    assert_refused(run_importer(source, out), out, "truncated or corrupt .keras archive")


def test_refuses_file_that_is_not_keras(tmp_path):
    source = str(tmp_path / "photo.keras")
    with open(source, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 not a model")
    out = str(tmp_path / "bad.pt")
    assert_refused(run_importer(source, out), out, "neither a .keras archive")


def _edit_h5(source, edit):
    with h5py.File(source, "r+") as f:
        edit(f["model_weights"])


def test_refuses_missing_weight(tmp_path):
    source = str(tmp_path / "missing.h5")
    fixtures.write_legacy_h5(fixtures.custom_cnn(32), source, 2)
    _edit_h5(source, lambda g: g["conv2d_1"]["conv2d_1"].__delitem__("bias:0"))
    out = str(tmp_path / "bad.pt")
    assert_refused(run_importer(source, out), out, "'conv2d_1'", "weight 'bias' is missing")


def test_refuses_misshaped_weight(tmp_path):
    source = str(tmp_path / "shape.h5")
    fixtures.write_legacy_h5(fixtures.custom_cnn(32), source, 3)

    def edit(g):
        del g["dense"]["dense"]["kernel"]
        g["dense"]["dense"].create_dataset("kernel", data=np.zeros((10, 64), np.float32))
    _edit_h5(source, edit)
    out = str(tmp_path / "bad.pt")
    assert_refused(run_importer(source, out), out, "'dense'", "weight 'kernel' has shape (10, 64)")


def test_refuses_missing_weight_in_archive(tmp_path):
    source = str(tmp_path / "missing.keras")
    m = fixtures.custom_cnn(32)
    m.entries[2]["weights"] = m.entries[2]["weights"][:2]  # batch_normalization without its statistics
    fixtures.write_archive(m, source, "keras3")
    out = str(tmp_path / "bad.pt")
    assert_refused(run_importer(source, out), out, "'batch_normalization'", "'moving_mean' is missing")


def test_refuses_model_that_is_not_an_image_classifier(tmp_path):
    k = Maker(0)
    tabular = Model("model", "Functional", None)
    tabular.input_name = tabular.layer("InputLayer", "input_1", {}, [])
    tabular.input_shape = (10,)
    k.dense(tabular, "dense", 2, 10, activation="softmax")
    source = str(tmp_path / "tabular.keras")
    fixtures.write_archive(tabular, source, "keras3")
    out = str(tmp_path / "bad.pt")
    assert_refused(run_importer(source, out, labels="a,b"), out, "image classifier")

    segmenter = Model("model", "Functional", (16, 16, 3))
    k.conv(segmenter, "mask", 2, 3, 3, activation="sigmoid")
    source = str(tmp_path / "segmenter.keras")
    fixtures.write_archive(segmenter, source, "keras3")
    assert_refused(run_importer(source, out, labels="a,b"), out, "'mask'", "one score per class")


def test_refuses_wrong_labels_and_cam_layer(small_cnn, tmp_path):
    out = str(tmp_path / "bad.pt")
    assert_refused(run_importer(small_cnn, out, labels="a,b"), out, "2 labels given, the model has 7 outputs")
    assert_refused(run_importer(small_cnn, out, "--cam-layer", "dense"), out, "--cam-layer 'dense'",
                   "conv2d_2")
    assert_refused(run_importer(small_cnn, out, "--mean", "1,2"), out, "--mean")
