"""tools/onednn_check.py and tools/onednn-cap.sh: the check finds a wrong
convolution and says so; the cap is set only where the check fails, says
why on stderr, and a cap the caller set is kept without checking."""
import os
import shutil
import subprocess
import sys

import torch.nn.functional as F

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")
TOOLS = os.path.join(ROOT, "tools")
sys.path.insert(0, TOOLS)
import onednn_check  # noqa: E402


def test_the_check_runs_and_its_verdict_matches_its_exit_status():
    result = subprocess.run([sys.executable, os.path.join(TOOLS, "onednn_check.py")], capture_output=True, text=True)
    assert "oneDNN float32 convolutions" in result.stdout and "largest difference" in result.stdout
    assert ("agree" in result.stdout) == (result.returncode == 0)
    assert ("are WRONG" in result.stdout) == (result.returncode == 1)


def test_the_check_finds_a_wrong_convolution(monkeypatch, capsys):
    right = F.conv2d
    monkeypatch.setattr(F, "conv2d", lambda *args, **kwargs: right(*args, **kwargs) + 0.01)
    assert onednn_check.main() == 1
    assert "are WRONG" in capsys.readouterr().out


def cap_after_sourcing(tmp_path, check_source, **environment):
    """ONEDNN_MAX_CPU_ISA after sourcing a copy of onednn-cap.sh beside a stand-in check, and its stderr."""
    shutil.copy(os.path.join(TOOLS, "onednn-cap.sh"), tmp_path)
    (tmp_path / "onednn_check.py").write_text(check_source)
    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")}
    result = subprocess.run(["bash", "-c", '. "$1/onednn-cap.sh"; echo "cap=${ONEDNN_MAX_CPU_ISA:-}"', "-", tmp_path],
                            capture_output=True, text=True, env={**env, **environment}, check=True)
    return result.stdout.strip(), result.stderr


def test_the_cap_is_set_only_where_the_check_fails(tmp_path):
    failing = ("import os, sys\n"
               "print('stand-in convolutions are WRONG' if not os.environ.get('ONEDNN_MAX_CPU_ISA') else 'agree')\n"
               "sys.exit(0 if os.environ.get('ONEDNN_MAX_CPU_ISA') else 1)\n")
    cap, stderr = cap_after_sourcing(tmp_path, failing)
    assert cap == "cap=AVX2"
    assert "stand-in convolutions are WRONG; ONEDNN_MAX_CPU_ISA=AVX2 is set for this run" in stderr
    assert "dermal: agree" in stderr  # the check again, under the cap

    cap, stderr = cap_after_sourcing(tmp_path, "print('agree')\n")
    assert cap == "cap=" and stderr == ""


def test_a_cap_the_caller_set_is_kept_unchecked(tmp_path):
    never = "import sys\nprint('must not run')\nsys.exit(1)\n"
    assert cap_after_sourcing(tmp_path, never, ONEDNN_MAX_CPU_ISA="AVX512_CORE")[0] == "cap=AVX512_CORE"
    assert cap_after_sourcing(tmp_path, never, DNNL_MAX_CPU_ISA="AVX2") == ("cap=", "")


def test_no_python_torch_means_no_check_and_no_cap(tmp_path):
    missing = "import sys\nprint('no Python torch here')\nsys.exit(2)\n"
    assert cap_after_sourcing(tmp_path, missing) == ("cap=", "")
