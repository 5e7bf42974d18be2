# Sourced by tools/setup.sh (once its packages are in), tools/test.sh,
# benchmarks/run.sh and examples/django/serve.sh. Holds oneDNN to AVX2 only
# where a short check (tools/onednn_check.py, a few seconds) finds its float32
# convolutions wrong at this CPU's full instruction set, and says so on stderr:
# seen on a PVM guest under Debian 13's LibTorch 2.6, not on a KVM guest of
# the same CPU (docs/debian.md). A cap the caller set, under either of
# oneDNN's names, stays. Without Python's torch nothing is checked; a model
# file's probe still refuses a load whose numbers are wrong.
if [[ -z ${ONEDNN_MAX_CPU_ISA:-}${DNNL_MAX_CPU_ISA:-} ]]; then
  onednn_check=$(dirname "${BASH_SOURCE[0]}")/onednn_check.py
  onednn_status=0
  onednn_verdict=$(/usr/bin/python3 "$onednn_check" 2> /dev/null) || onednn_status=$?
  # 2: nothing checked (no Python torch; or no check script, as in the container image)
  if ((onednn_status != 0 && onednn_status != 2)); then
    export ONEDNN_MAX_CPU_ISA=AVX2
    echo "dermal: ${onednn_verdict:-$onednn_check failed (exit $onednn_status)}; ONEDNN_MAX_CPU_ISA=AVX2 is set for this run" >&2
    /usr/bin/python3 "$onednn_check" 2> /dev/null | sed 's/^/dermal: /' >&2 || true
  fi
  unset onednn_check onednn_status onednn_verdict
fi
