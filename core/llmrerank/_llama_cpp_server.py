"""llama-cpp-python's OpenAI-compatible server, with llama.cpp's extra (repacked) weight buffers
off on CPUs that report AMX.

On a 2-core Xeon with AMX (``amx_bf16``/``amx_int8`` in ``/proc/cpuinfo``) llama.cpp repacks the
weights into its AMX buffer type and the first decode crashes with a segmentation fault
(llama-cpp-python 0.3.36, the embedded Q4_1 GGUF); with ``use_extra_bufts = False`` it runs. The
server has no flag for it, so this launcher sets it before handing over to ``llama_cpp.server``
(``python -m llmrerank._llama_cpp_server`` takes the server's own arguments).
"""

from __future__ import annotations

import runpy
from typing import Any


def _has_amx() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return "amx_tile" in line.split()
    except OSError:
        pass
    return False


def main() -> None:
    if _has_amx():
        import llama_cpp.llama_cpp as lib

        default = lib.llama_model_default_params

        def params() -> Any:
            p = default()
            p.use_extra_bufts = False
            return p

        lib.llama_model_default_params = params
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
