# The one software image of every node of cluster.yaml, the CPU head and the GPU workers alike: Ray's GPU image
# of the Ray version in constraints.txt, with every package of constraints.txt (latune's dependencies and test
# extras, torch's CUDA 13.0 wheels included) installed at exactly its pinned version. Nodes then boot without
# installing anything, and nodes launched weeks apart run the same versions.
#
# latune's own code is not in the image: cluster.yaml's file_mounts copy your checkout to ~/latune on every node
# and its setup_commands install it from there with --no-deps (seconds, no download). So only a new lock or a new
# Dockerfile needs a new image; .dockerignore keeps everything but constraints.txt out of the build.
#
# Build and push it (docs/cluster.md; REGISTRY is your ECR registry). The tag ends with the digest of
# this file and the lock together, so a change of either is a new tag (ECR tags are write-once):
#     TAG=2.60.0-py311-gpu-$(cat Dockerfile constraints.txt | sha256sum | cut -c1-8)
#     docker build -t $REGISTRY/latune:$TAG . && docker push $REGISTRY/latune:$TAG
# then write $REGISTRY/latune:$TAG as docker.image in cluster.yaml. tests/test_cluster_image.py checks that the
# Ray version here, the lock and cluster.yaml's tag agree; `python -m latune.cluster check` checks the tag too.

# The base image's digest (sha256:...), so that a tag Ray pushes again cannot change what a rebuild starts from.
# Not pinned yet: no machine this file was written on could pull the image to read it. Write it here (from
# `docker buildx imagetools inspect rayproject/ray:2.60.0-py311-gpu`), not as --build-arg: the tag's digest then
# covers it. `python -m latune.cluster check` warns while it is empty.
ARG RAY_BASE_DIGEST=
FROM rayproject/ray:2.60.0-py311-gpu${RAY_BASE_DIGEST:+@}${RAY_BASE_DIGEST}

COPY --chown=1000:100 constraints.txt /tmp/latune/constraints.txt

# Every line of the lock is name==version, so as a requirements file it installs exactly those versions (pip
# resolves them together and replaces the base image's copies where they differ); --no-cache-dir keeps pip's
# download cache out of the image. `pip check` then fails the build if any installed package (the base image's
# included) requires a version the lock replaced, and the imports if a wheel does not load.
RUN pip install --no-cache-dir -r /tmp/latune/constraints.txt \
    && pip check \
    && python -c "import mlflow, optuna, pyarrow, ray.tune, torch, torchvision; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"
