# The Switchyard image: the static switchyard binary on an empty image. The
# docker provisioner (provision.Docker) starts media nodes from it
# ("<image> media --id ..."); agents can run from it too ("<image> agent ...").
#
# Build (the context is a directory holding the static binary):
#   CGO_ENABLED=0 go build -trimpath -o bin/image/switchyard ./cmd/switchyard
#   docker build -f Dockerfile -t switchyard:latest bin/image
FROM scratch
COPY switchyard /switchyard
ENTRYPOINT ["/switchyard"]
