"""``python -m llama_cpp.server`` without llama.cpp's extra CPU buffer types.

The tests and ``python -m bench explain`` start the OpenAI-compatible llama.cpp server
through this file. llama.cpp built for the machine it runs on (``pip install
llama-cpp-python`` compiles natively) uses AMX and weight-repacking buffers where the
CPU reports them; on virtual machines whose CPU lists AMX but whose hypervisor does not
enable its tile state, the first token then dies of a general protection fault in
``libggml-cpu.so`` (seen here with SmolLM2's Q4_1 weights). The server has no flag for
``llama_model_params.use_extra_bufts``, so this sets it off and runs the server's own
entry point; the arguments are the server's.
"""

from __future__ import annotations

import runpy
from typing import Any

from llama_cpp import llama_cpp as bindings

_default_params = bindings.llama_model_default_params


def _params_without_extra_buffers() -> Any:
    params = _default_params()
    params.use_extra_bufts = False
    return params


if __name__ == "__main__":
    bindings.llama_model_default_params = _params_without_extra_buffers
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
