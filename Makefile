# fastdiode: `make test` and `make demo` set everything up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fastdiode-installed
# Triton kernels run on CPU only through the interpreter; it must be on before the first `import triton`.
TRITON_MODE = TRITON_INTERPRET=$$($(PY) -c 'import torch; print(0 if torch.cuda.is_available() else 1)')

.PHONY: setup lint test demo bench bench-models bench-inversion bench-digits bench-digits-v8 bench-kd bench-dicod bench-quant classifier-digits bench-classifier \
	bench-loader bench-gpu clean

# The venv sees the system site-packages so a CUDA torch already on the machine is kept; the CPU wheel
# (torch==2.13.0) is installed only where no torch imports at all.
$(STAMP): setup.py pyproject.toml
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -c 'import torch' 2>/dev/null || $(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e '.[test,dali,quantize]'
	touch $@

setup: $(STAMP)

# The lint (ruff: pyflakes, pycodestyle, import order, bugbear, pyupgrade; pyproject.toml) runs before the tests.
lint: setup
	$(PY) -m ruff check fastdiode kernels tests benchmarks setup.py

test: setup lint
	$(TRITON_MODE) $(PY) -m pytest -n auto -q tests

# DIODE end to end on the digits benchmark (runs/demo/report.md); a second run reuses what the first made.
demo: setup
	TRITON_INTERPRET=0 $(PY) -m fastdiode demo

# The full digits benchmark (benchmarks/results/bench_digits/).
bench-digits: setup
	TRITON_INTERPRET=0 $(PY) -m fastdiode demo --config configs/bench_digits.yaml
	mkdir -p benchmarks/results/bench_digits/synth/diode
	cp runs/bench_digits/report.md runs/bench_digits/results.json runs/bench_digits/curves.png runs/bench_digits/tide.png \
	   runs/bench_digits/teacher_on_synth.png benchmarks/results/bench_digits/
	cp runs/bench_digits/synth/diode/preview.png benchmarks/results/bench_digits/synth/diode/
	$(PY) benchmarks/diagnose_digits.py runs/bench_digits benchmarks/results/bench_digits

# The digits benchmark from the YOLOv8-family teacher (benchmarks/results/bench_digits_v8/).
bench-digits-v8: setup
	TRITON_INTERPRET=0 $(PY) -m fastdiode demo --config configs/bench_digits_v8.yaml
	mkdir -p benchmarks/results/bench_digits_v8/synth/diode
	cp runs/bench_digits_v8/report.md runs/bench_digits_v8/results.json runs/bench_digits_v8/curves.png \
	   runs/bench_digits_v8/teacher_on_synth.png benchmarks/results/bench_digits_v8/
	cp runs/bench_digits_v8/synth/diode/preview.png benchmarks/results/bench_digits_v8/synth/diode/

# Feature and logit distillation on the digits (benchmarks/results/bench_kd/).
bench-kd: setup
	TRITON_INTERPRET=0 $(PY) -m fastdiode demo --config configs/bench_kd.yaml
	mkdir -p benchmarks/results/bench_kd
	cp runs/bench_kd/report.md runs/bench_kd/results.json runs/bench_kd/curves.png benchmarks/results/bench_kd/

# DICOD (classifier-to-detector distillation) on the digits, with TIDE (benchmarks/results/bench_dicod/).
bench-dicod: setup
	TRITON_INTERPRET=0 $(PY) -m fastdiode demo --config configs/bench_dicod.yaml
	mkdir -p benchmarks/results/bench_dicod
	cp runs/bench_dicod/report.md runs/bench_dicod/results.json runs/bench_dicod/curves.png \
	   runs/bench_dicod/tide.png benchmarks/results/bench_dicod/

# Data-free quantization of the shipped digits teachers (benchmarks/results/bench_quant/): PTQ and QAT accuracy,
# then the int8 latency (on a quiet machine: it refuses to time on a busy one).
bench-quant: setup
	TRITON_INTERPRET=0 $(PY) benchmarks/bench_quant.py --section accuracy
	TRITON_INTERPRET=0 $(PY) benchmarks/diagnose_quant.py
	TRITON_INTERPRET=0 $(PY) benchmarks/bench_quant.py --section latency

# The shipped crop classifier (fastdiode/assets/classifier_digits): digits data, 32 px crops, train-classifier.
classifier-digits: setup
	TRITON_INTERPRET=0 $(PY) -m fastdiode data digits --out runs/digits --proxy 512
	TRITON_INTERPRET=0 $(PY) -m fastdiode data crops --from runs/digits --out runs/crops32 --size 32
	TRITON_INTERPRET=0 $(PY) -m fastdiode train-classifier --config configs/classifier_digits.yaml
	cp runs/classifier_digits/best.safetensors fastdiode/assets/classifier_digits.safetensors
	cp runs/classifier_digits/best.json fastdiode/assets/classifier_digits.json

# The crop classifier's loss (CE, focal, both) at two crop sizes (benchmarks/results/classifier_losses.md).
bench-classifier: setup
	TRITON_INTERPRET=0 $(PY) -m fastdiode data digits --out runs/digits --proxy 512
	TRITON_INTERPRET=0 $(PY) benchmarks/bench_classifier_losses.py --data runs/digits --out benchmarks/results

# Distillation loader (DALI vs torch DataLoader) and student step (compiled vs eager) on CPU.
bench-loader: setup
	TRITON_INTERPRET=0 $(PY) benchmarks/bench_distill_cpu.py --out benchmarks/results

# Never under the Triton interpreter: it also slows inductor's compiled CPU code.
bench: setup
	TRITON_INTERPRET=0 $(PY) benchmarks/bench_ops_cpu.py --out benchmarks/results

bench-models: setup
	TRITON_INTERPRET=0 $(PY) benchmarks/bench_models_cpu.py --out benchmarks/results

bench-inversion: setup
	TRITON_INTERPRET=0 $(PY) benchmarks/bench_inversion_cpu.py --out benchmarks/results

# On a GPU machine without a package index: the package (kernels/ as fastdiode.kernels) installs from the source
# tree without fetching anything; then correctness on CUDA (tests/gpu), then the measurements.
bench-gpu:
	PYTHON=$(PYTHON) bash benchmarks/gpu_session.sh benchmarks/results

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .benchmarks
