"""The layer graph: a Keras model config (nested Sequential and Functional
models) flattened into one list of primitive layers in topological order."""
from .. import Refusal

class Layer:
    """One primitive Keras layer in the flattened graph."""

    def __init__(self, class_name, config, nesting, inputs):
        self.class_name = class_name
        self.config = config
        self.name = config.get("name")
        self.nesting = nesting      # names of the nested models around it
        self.inputs = inputs        # names (keys) of the layers whose outputs it takes
        self.key = "/".join(list(nesting) + [self.name])


def _config_of(entry):
    return entry.get("config", {})


def class_of(entry):
    return entry.get("class_name")


def _input_shape_of(config):
    for key in ("batch_shape", "batch_input_shape"):
        if config.get(key):
            return list(config[key])
    return None


def _history_refs(args):
    """The [layer, node, tensor] references in a Keras 3 inbound node's args."""
    refs = []
    if isinstance(args, dict):
        if args.get("class_name") == "__keras_tensor__":
            refs.append(args["config"]["keras_history"])
        else:
            for value in args.values():
                refs += _history_refs(value)
    elif isinstance(args, (list, tuple)):
        for value in args:
            refs += _history_refs(value)
    return refs


def _constants(args):
    """The non-tensor values among a Keras 3 node's args (e.g. the 3.0 of x + 3.0)."""
    if isinstance(args, dict):
        return [] if args.get("class_name") == "__keras_tensor__" else [args]
    if isinstance(args, (list, tuple)):
        return [c for value in args for c in _constants(value)]
    return [] if args is None else [args]


# Arithmetic between a tensor and a number, as Keras 3 records an operator on a
# tensor (keras.src.ops.numpy.Add for x + 3.0) and Keras 2 a TFOpLambda
# (tf.__operators__.add with y=3.0): keras.applications' MobileNetV3 builds its
# hard sigmoid so.
KERAS3_SCALAR_OPS = {"Add": "add", "Subtract": "subtract", "Multiply": "multiply",
                     "Divide": "divide", "TrueDivide": "divide"}
TF_SCALAR_OPS = {"__operators__.add": "add", "math.add": "add", "math.subtract": "subtract",
                 "math.multiply": "multiply", "math.truediv": "divide", "math.divide": "divide"}


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _scalar_op(entry, name):
    """(op, constant, tensor_first) if `entry` is tensor-and-number arithmetic
    recorded outside a layer; None if it is a layer; Refusal for other operations."""
    module = entry.get("module") or ""
    node = (entry.get("inbound_nodes") or [None])[0]
    if module.startswith(("keras.src.ops", "keras.ops")):
        op = KERAS3_SCALAR_OPS.get(class_of(entry))
        args = node.get("args", []) if isinstance(node, dict) else []
        numbers = [a for a in args if _is_number(a)]
        if op is None or len(args) != 2 or len(numbers) != 1:
            raise Refusal(f"layer {name!r}: {class_of(entry)} from {module} is an operation applied "
                          "to a tensor outside any layer; only arithmetic between one tensor and "
                          "one number is supported")
        return op, float(numbers[0]), _is_number(args[1])
    if class_of(entry) == "TFOpLambda":
        function = _config_of(entry).get("function")
        kwargs = node[0][3] if node and len(node) == 1 and len(node[0]) > 3 else {}
        constant = kwargs.get("y") if isinstance(kwargs, dict) else None
        if function not in TF_SCALAR_OPS or not _is_number(constant):
            raise Refusal(f"layer {name!r} (TFOpLambda): the TensorFlow operation {function!r} "
                          "is not supported (only tensor-and-number add, subtract, multiply, divide)")
        return TF_SCALAR_OPS[function], float(constant), True
    return None


def _inbound_layer_names(entry):
    name = entry.get("name") or _config_of(entry).get("name")
    nodes = entry.get("inbound_nodes") or []
    if len(nodes) > 1:
        raise Refusal(f"layer {name!r} is called {len(nodes)} times (a shared layer); "
                      "the importer converts each layer once")
    if not nodes:
        return []
    node = nodes[0]
    if isinstance(node, dict):  # Keras 3
        constants = _constants(node.get("args", []))
        if constants and _scalar_op(entry, name) is None:
            raise Refusal(f"layer {name!r} is called with the constant argument(s) {constants[:3]}; "
                          "only tensors are supported")
        return [ref[0] for ref in _history_refs(node.get("args", []))]
    return [ref[0] for ref in node]  # Keras 2: [[name, node, tensor, kwargs], ...]


class GraphBuilder:
    """Flattens nested Sequential/Functional models into one list of primitive
    layers in topological order, each knowing the keys of its inputs."""

    MODEL_CLASSES = ("Sequential", "Functional", "Model")

    def __init__(self):
        self.layers = []
        self.input_shape = None
        self.input_key = None

    def build(self, entry):
        """(layers, key of the graph input, key of the output); the top-level
        model's own name is not part of weight paths."""
        if class_of(entry) == "Sequential":
            output = self._sequential(_config_of(entry), (), None)
        else:
            output = self._functional(_config_of(entry), (), None)
        return self.layers, self.input_key, output

    def _graph_input(self, shape):
        """The key of the graph's input tensor, the first time with its shape."""
        if self.input_key is None:
            self.input_shape = shape
            self.input_key = "<input>"
        return self.input_key

    def _sequential(self, config, nesting, input_key):
        """Chains the layers; without `input_key` the input shape comes from
        an InputLayer, the first layer's batch shape, build_input_shape, or
        else the first layer when it is a model with an input of its own."""
        current = input_key
        layers = config.get("layers", [])
        if current is None:
            shape = None
            if layers:
                shape = _input_shape_of(_config_of(layers[0]))
            shape = shape or config.get("build_input_shape")
            first_is_model = bool(layers) and class_of(layers[0]) in self.MODEL_CLASSES
            if shape is not None or not first_is_model:
                current = self._graph_input(shape)
        for entry in layers:
            if class_of(entry) == "InputLayer":
                continue
            current = self._add(entry, nesting, [current])
        return current

    def _functional(self, config, nesting, input_key):
        inputs = config.get("input_layers") or []
        if inputs and isinstance(inputs[0], str):  # a single input as [name, 0, 0]
            inputs = [inputs]
        outputs = config.get("output_layers") or []
        if outputs and isinstance(outputs[0], str):
            outputs = [outputs]
        model_name = config.get("name")
        if len(inputs) != 1 or len(outputs) != 1:
            raise Refusal(f"model {model_name!r} has {len(inputs)} inputs and {len(outputs)} outputs; "
                          "an image classifier has one of each")
        keys = {}
        for entry in config.get("layers", []):
            name = entry.get("name") or _config_of(entry).get("name")
            if class_of(entry) == "InputLayer":
                keys[name] = input_key if input_key is not None else self._graph_input(
                    _input_shape_of(_config_of(entry)))
                continue
            sources = _inbound_layer_names(entry)
            missing = [s for s in sources if s not in keys]
            if missing or not sources:
                raise Refusal(f"layer {name!r} in model {model_name!r} takes "
                              f"{missing or 'no'} input(s) the importer cannot place")
            scalar = _scalar_op(entry, name)
            if scalar:
                op, constant, tensor_first = scalar
                entry = {"class_name": "ScalarOperation", "name": name,
                         "config": {"name": name, "op": op, "constant": constant, "tensor_first": tensor_first}}
            keys[name] = self._add(entry, nesting, [keys[s] for s in sources])
        return keys[outputs[0][0]]

    def _add(self, entry, nesting, inputs):
        kind = class_of(entry)
        if kind in self.MODEL_CLASSES:
            if len(inputs) != 1:
                raise Refusal(f"nested model {_config_of(entry).get('name')!r} takes {len(inputs)} inputs")
            return self._nested(entry, nesting, inputs[0])
        layer = Layer(kind, _config_of(entry), nesting, inputs)
        if layer.name is None:
            layer.name = entry.get("name")
            layer.key = "/".join(list(nesting) + [layer.name])
        self.layers.append(layer)
        return layer.key

    def _nested(self, entry, nesting, input_key):
        config = _config_of(entry)
        inner = nesting + (config.get("name") or entry.get("name"),)
        if class_of(entry) == "Sequential":
            return self._sequential(config, inner, input_key)
        return self._functional(config, inner, input_key)




def topological(layers, input_key):
    done, ordered, pending = {input_key}, [], list(layers)
    while pending:
        ready = [layer for layer in pending if all(s in done for s in layer.inputs)]
        if not ready:
            raise Refusal("the layer graph has a cycle or an unreachable input")
        for layer in ready:
            done.add(layer.key)
            ordered.append(layer)
        pending = [layer for layer in pending if layer.key not in done]
    return ordered

