# WEAT Lens as a Hugging Face Space (sdk: docker, app_port: 8501), or anywhere Docker runs:
#   docker build -t weat-lens . && docker run -p 8501:8501 weat-lens
FROM python:3.11-slim

# A free Space has 2 vCPUs: torch uses both, and the Training page trains one live run at a time
# for all visitors (others are told what run holds the place and how long it has left), each for
# at most 10 minutes (a run still going after 12.5 stops, its finished epochs kept); a page's
# computation (an attack, an evaluation, SGLD chains) stops after 5 minutes with a message.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/home/user PATH=/home/user/.local/bin:$PATH \
    HF_HOME=/home/user/.cache/huggingface WEAT_DATA_DIR=/home/user/data \
    OMP_NUM_THREADS=2 WEAT_MAX_LIVE_RUNS=1 WEAT_MAX_RUN_MINUTES=10 WEAT_MAX_TASK_MINUTES=5

# Spaces run the container as user 1000.
RUN useradd -m -u 1000 user
WORKDIR /home/user/app

# requirements.txt pins torch==2.14.1, a CUDA build on PyPI; the Space has no GPU, so the CPU
# wheels (same version, a fraction of the size) come from PyTorch's CPU index.
COPY --chown=user requirements.txt requirements-nodeps.txt ./
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.txt \
 && pip install --no-deps -r requirements-nodeps.txt

COPY --chown=user . .
USER user
# CIFAR-10 into the image, so the public demo opens on real test images instead of the synthetic
# stand-in (a Space build is online; the app itself never needs the network). The archive is
# dropped once unpacked. Offline builds go on without it and the app says what to do.
RUN mkdir -p "$WEAT_DATA_DIR" \
 && (python -c "from weat_core.data import load_split; load_split('cifar10', 'test')" \
     && rm -f "$WEAT_DATA_DIR/cifar-10-python.tar.gz" \
     || echo "CIFAR-10 could not be downloaded; the app will offer its synthetic images")

EXPOSE 8501
HEALTHCHECK CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health')"
# XSRF protection off: the Space serves the app inside an iframe on another origin, where
# Streamlit's XSRF cookie is blocked and file uploads would fail with 403.
CMD ["streamlit", "run", "app.py", "--server.port=8501", "--server.address=0.0.0.0", \
     "--server.enableXsrfProtection=false"]
