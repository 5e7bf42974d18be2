# Sourced by tools/setup.sh, tools/test.sh and benchmarks/run.sh. On Debian 13
# (LibTorch 2.6) oneDNN is held to AVX2, as the README tells its users: its
# AVX-512 float32 convolutions were measured wrong (README, "Debian 12 and
# 13"). A cap the caller set, under either of oneDNN's names, stays.
if [[ $(. /etc/os-release && echo "${VERSION_ID:-}") != 12 && -z ${ONEDNN_MAX_CPU_ISA:-}${DNNL_MAX_CPU_ISA:-} ]]; then
  export ONEDNN_MAX_CPU_ISA=AVX2
fi
