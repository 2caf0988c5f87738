# On-device inference environment: what a Raspberry Pi inference service gets. tflite-runtime 2.14
# wheels are built against NumPy 1.x and TensorFlow 2.21 needs NumPy 2, so this is a venv of its own
# with nothing but NumPy<2, tflite-runtime and edgefed (--no-deps: no TensorFlow, no cryptography).
# The package is installed editable so the tests always run the working tree's inference code.
LITE_VENV ?= .venv-lite
LITE_PIP := $(LITE_VENV)/bin/python -m pip

$(LITE_VENV)/.installed: pyproject.toml mk/lite.mk
	rm -rf $(LITE_VENV)
	$(PYTHON) -m venv $(LITE_VENV)
	$(LITE_PIP) install --quiet --upgrade pip
	$(LITE_PIP) install --quiet 'numpy<2' 'tflite-runtime==2.14.0'
	$(LITE_PIP) install --quiet --no-deps -e .
	$(LITE_VENV)/bin/python -c "import numpy, tflite_runtime.interpreter; assert int(numpy.__version__.split('.')[0]) < 2"
	$(LITE_VENV)/bin/edgefed-predict --help >/dev/null
	touch $@

SETUP_TARGETS += $(LITE_VENV)/.installed
