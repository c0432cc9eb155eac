# One-command set-up, demo and tests. `make demo` and `make test` set up .venv first when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
METHOD ?= centermask
export DETECTRON2_DATASETS ?= $(CURDIR)/datasets

.PHONY: setup demo test lint format clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml setup.py vis_eval/_rle_accel.c tools/install_detectron2.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=23"
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python tools/install_detectron2.py
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# `make demo [METHOD=centermask|sipmask|sipmask_vis|stmask]`: train on the synthetic shapes data (the
# synthetic videos for sipmask_vis and stmask), evaluate (COCO AP tables; video AP on synthetic_vis_val), then
# draw the model's predictions on validation images (annotated MP4s and GIFs of validation videos,
# with track ids) into $(DEMO_OUT)/visualizations.
DEMO_CONFIG_centermask := configs/CenterMask/CenterMask-Lite-synthetic.yaml
DEMO_CONFIG_sipmask := configs/SipMask/SipMask-synthetic.yaml
DEMO_CONFIG_sipmask_vis := configs/SipMaskVIS/SipMaskVIS-synthetic.yaml
DEMO_CONFIG_stmask := configs/STMask/STMask-synthetic.yaml
DEMO_CONFIG = $(DEMO_CONFIG_$(METHOD))
DEMO_OUT = output/demo-$(METHOD)
SYNTHETIC_VAL_IMAGES = $(DETECTRON2_DATASETS)/synthetic_shapes/v1/val/00000*.png

demo: $(STAMP)
	@test -n "$(DEMO_CONFIG)" || { echo "unknown METHOD=$(METHOD); use centermask, sipmask, sipmask_vis or stmask"; exit 2; }
	@start=$$(date +%s); \
	$(BIN)/python train_net.py --config-file $(DEMO_CONFIG) OUTPUT_DIR $(DEMO_OUT) && \
	if [ "$(METHOD)" = sipmask_vis ] || [ "$(METHOD)" = stmask ]; then \
	$(BIN)/python demo/video_demo.py --config-file $(DEMO_CONFIG) --dataset synthetic_vis_val --videos 4 \
		--output $(DEMO_OUT)/visualizations MODEL.WEIGHTS $(DEMO_OUT)/model_final.pth; else \
	$(BIN)/python demo/demo.py --config-file $(DEMO_CONFIG) --input "$(SYNTHETIC_VAL_IMAGES)" \
		--output $(DEMO_OUT)/visualizations --confidence-threshold 0.4 \
		--opts MODEL.WEIGHTS $(DEMO_OUT)/model_final.pth; fi && \
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
