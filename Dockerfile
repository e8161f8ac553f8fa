# The one software image of every node of cluster.yaml, the CPU head and the GPU workers alike: Ray's GPU image
# of the Ray version in constraints.txt, with every package of constraints.txt (latune's dependencies and test
# extras, torch's CUDA 13.0 wheels included) installed at exactly its pinned version. Nodes then boot without
# installing anything, and nodes launched weeks apart run the same versions.
#
# latune's own code is not in the image: cluster.yaml's file_mounts copy your checkout to ~/latune on every node
# and its setup_commands install it from there with --no-deps (seconds, no download). So only a new lock needs a
# new image; .dockerignore keeps everything but constraints.txt out of the build.
#
# Build and push it (README, "Running on a cluster"; REGISTRY is your ECR registry):
#     TAG=2.60.0-py311-gpu-$(sha256sum constraints.txt | cut -c1-8)
#     docker build -t $REGISTRY/latune:$TAG . && docker push $REGISTRY/latune:$TAG
# then write $REGISTRY/latune:$TAG as docker.image in cluster.yaml. tests/test_cluster_image.py checks that the
# Ray version here, the lock and cluster.yaml's tag agree; `python -m latune.cluster check` checks the tag too.
FROM rayproject/ray:2.60.0-py311-gpu

COPY --chown=1000:100 constraints.txt /tmp/latune/constraints.txt

# Every line of the lock is name==version, so as a requirements file it installs exactly those versions (pip
# resolves them together and replaces the base image's copies where they differ); --no-cache-dir keeps pip's
# download cache out of the image. The imports then fail the build if a wheel does not load.
RUN pip install --no-cache-dir -r /tmp/latune/constraints.txt \
    && python -c "import mlflow, optuna, pyarrow, ray.tune, torch, torchvision; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"
