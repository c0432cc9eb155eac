# One-command set-up, demo and tests. `make demo` and `make test` set up .venv first when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
METHOD ?= centermask
export DETECTRON2_DATASETS ?= $(CURDIR)/datasets

.PHONY: setup demo test lint format clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml tools/install_detectron2.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=23"
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python tools/install_detectron2.py
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# `make demo [METHOD=centermask|sipmask]`: train on the synthetic shapes data, evaluate (COCO AP
# tables), then draw the model's predictions on validation images into $(DEMO_OUT)/visualizations.
DEMO_CONFIG_centermask := configs/CenterMask/CenterMask-Lite-synthetic.yaml
DEMO_CONFIG_sipmask := configs/SipMask/SipMask-synthetic.yaml
DEMO_CONFIG = $(DEMO_CONFIG_$(METHOD))
DEMO_OUT = output/demo-$(METHOD)
SYNTHETIC_VAL_IMAGES = $(DETECTRON2_DATASETS)/synthetic_shapes/v1/val/00000*.png

demo: $(STAMP)
	@test -n "$(DEMO_CONFIG)" || { echo "unknown METHOD=$(METHOD); use centermask or sipmask"; exit 2; }
	@start=$$(date +%s); \
	$(BIN)/python train_net.py --config-file $(DEMO_CONFIG) OUTPUT_DIR $(DEMO_OUT) && \
	$(BIN)/python demo/demo.py --config-file $(DEMO_CONFIG) --input "$(SYNTHETIC_VAL_IMAGES)" \
		--output $(DEMO_OUT)/visualizations --confidence-threshold 0.4 \
		--opts MODEL.WEIGHTS $(DEMO_OUT)/model_final.pth && \
	echo "make demo: done in $$(( $$(date +%s) - start )) s; AP tables above," \
		"pictures in $(DEMO_OUT)/visualizations"

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) output
