# The Operon core: its static (musl) binary alone, run as a non-root user. Nothing else is in the
# image: no shell, no libc, no CA bundle (the core trusts the cluster's CA from its ServiceAccount
# or kubeconfig, and the handler services' CA from --tls-ca).
#
# Built by deploy/docker/build.sh, whose build context holds only the binary (`operon`), built on
# the host by `cargo build --release --locked -p operon --target x86_64-unknown-linux-musl`.
FROM scratch
COPY operon /operon
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/operon"]
CMD ["--help"]
