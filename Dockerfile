# The SDK worker image for runners that start workers as containers (Dataflow; Flink or Spark
# with --environment_type DOCKER). Built from this repository's own files only; nothing is
# fetched at run time: the driver ships the built-in weights through the output
# (docs/CLUSTER.md, "Workers need nothing from the internet").
#
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPO/vidxai:0.1.0 .
#
# Beam's SDK image provides the worker boot program (/opt/apache/beam/boot), Python 3.11 and
# Beam itself; the pins below keep the worker equal to the driver (same Beam, same torch).
FROM apache/beam_python3.11_sdk:2.77.0

WORKDIR /opt/vidxai
COPY setup.py README.md run_pipeline.py ./
COPY models/ models/
COPY transforms/ transforms/
COPY pipeline/ pipeline/
# [gcp]: gs:// through Beam FileSystems and pyarrow; [aws] (boto3) comes with the project.
RUN pip install --no-cache-dir . "apache-beam[gcp,aws]==2.77.0" \
    && python -c "import run_pipeline, models.families, transforms.explain"

ENTRYPOINT ["/opt/apache/beam/boot"]
