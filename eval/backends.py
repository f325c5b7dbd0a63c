"""Generation backends the evaluator can use (`eval.backend`); eval/generate.py implements each."""
BACKENDS = ("auto", "dynamic", "static", "vllm")  # auto = vLLM if installed (GPU), else static cache + compiled
