# Homebrew formula for darwin-cri, built from source with cargo from the checkout it sits in:
#
#   brew install --HEAD ./deploy/homebrew/darwin-cri.rb
#   sudo brew services start darwin-cri
#
# `--HEAD` builds the checkout's committed main branch (Homebrew clones it through the file://
# URL below; uncommitted changes are not built). There is no stable `url` and `sha256` until
# darwin-cri publishes release tarballs: then add `url "<release tarball>"` and
# `sha256 "<shasum -a 256 of it>"`, and `brew install --build-from-source` works without --HEAD.
#
# The service below is a LaunchDaemon named homebrew.mxcl.darwin-cri. deploy/install.sh installs
# the same daemon as io.darwin-cri with a hand-written plist (AbandonProcessGroup, open-file and
# process limits, which the service DSL does not express); use one or the other, never both: two
# servers would fight over one socket and one state root.
#
# The kubelet is not built here: scripts/build-kubelet.sh builds this project's kubelet from
# upstream's Go module (Go 1.26, about a GB of modules, minutes of build), and a formula has one
# service. The caveats say how to build it and run it beside darwin-cri with deploy/install.sh;
# its launchd job and configuration are installed into pkgshare for reference.
class DarwinCri < Formula
  desc "Kubernetes CRI runtime for macOS nodes: native, chroot-based build pods"
  homepage "https://example.invalid/darwin-cri"
  license "Apache-2.0"
  # The repository this file is in (deploy/homebrew/ is two levels below its root).
  head "file://#{File.expand_path("../..", __dir__)}", using: :git, branch: "main"

  depends_on "protobuf" => :build # protoc, for the CRI gRPC types
  depends_on "rust" => :build
  depends_on :macos

  def install
    # With the node reporter (`darwin-cri node-report`, `node.report = true`). cargo install
    # installs both of the package's binaries into bin/: darwin-cri and darwin-cri-monitor, the
    # per-container monitor that the server starts from its own directory.
    system "cargo", "install", "--features", "kube", *std_cargo_args(path: "cri-server")

    # The node configuration: Homebrew keeps an existing etc/darwin-cri/config.toml on upgrade
    # and leaves the new one beside it as config.toml.default.
    (etc/"darwin-cri").install "deploy/darwin-cri.toml" => "config.toml"
    # For reference: the shipped node configuration (to diff against after upgrades), kubelet's
    # configuration for a darwin node, and the log-rotation entry.
    pkgshare.install "deploy/darwin-cri.toml", "deploy/kubelet-config.yaml",
                     "deploy/kubelet-config-fields.txt", "deploy/newsyslog.d/darwin-cri.conf",
                     "deploy/io.darwin-cri.kubelet.plist", "deploy/README.md"
  end

  def post_install
    (var/"log").mkpath
  end

  service do
    run [opt_bin/"darwin-cri", "--config", etc/"darwin-cri/config.toml", "serve"]
    # chroot, setuid to the containers' users and bindfs mounts need root.
    require_root true
    keep_alive true
    throttle_interval 10
    # Builds run as descendants of this daemon: keep launchd from throttling their CPU and I/O
    # (see the ProcessType comment in deploy/io.darwin-cri.plist).
    process_type :interactive
    working_dir "/"
    # HOMEBREW_PREFIX/bin first, where bindfs is.
    environment_variables PATH: std_service_path_env
    log_path var/"log/darwin-cri.log"
    error_log_path var/"log/darwin-cri.log"
  end

  def caveats
    <<~EOS
      darwin-cri runs containers in chroot(2) roots, and System Integrity Protection forbids
      chroot: disable SIP on build Macs (Recovery -> Terminal -> `csrutil disable`, reboot).
      Check the setting with `csrutil status`.

      Volumes are mounted with bindfs over macFUSE:
        brew install --cask macfuse
        brew install gromgit/fuse/bindfs-mac
      then allow macFUSE's system extension (System Settings -> Privacy & Security; on Apple
      silicon this first needs "Reduced Security" with kernel extensions allowed in Startup
      Security Utility) and reboot.

      The configuration is #{etc}/darwin-cri/config.toml (mounts.allowed_host_paths limits which
      host directories pods may mount). Check the host with:
        sudo #{opt_bin}/darwin-cri --config #{etc}/darwin-cri/config.toml doctor
      and start the daemon with:
        sudo brew services start darwin-cri
      After `brew upgrade darwin-cri`, restart it (sudo brew services restart darwin-cri): the
      running server starts each new container's monitor from the installed darwin-cri-monitor,
      which must be its own version. Running containers keep running through the restart.
      Its log is #{var}/log/darwin-cri.log.

      The kubelet: upstream ships none for macOS; darwin-cri builds its own, which this formula
      does not (see #{opt_pkgshare}/README.md). On a Mac that joins a cluster, build it in a
      darwin-cri checkout (brew install go coreutils; the script wants GNU date and cp, so put
      "$(brew --prefix coreutils)/libexec/gnubin" first on PATH):
        scripts/build-kubelet.sh darwin/$(uname -m | sed s/x86_64/amd64/)
      and install it with deploy/install.sh, which also installs darwin-cri as io.darwin-cri:
      stop this formula's service first (sudo brew services stop darwin-cri), one darwin-cri per Mac.
        sudo deploy/install.sh install --join-server https://<api server>:6443 \\
          --join-token <id>.<secret> --join-ca <cluster ca.crt>
      #{opt_pkgshare}/io.darwin-cri.kubelet.plist and kubelet-config.yaml are what it installs.
    EOS
  end

  test do
    # The server looks for its monitor beside itself.
    assert_match "protocol", shell_output("#{bin}/darwin-cri-monitor --version")
    output = shell_output("#{bin}/darwin-cri config default")
    assert_match 'socket = "/var/run/darwin-cri/darwin-cri.sock"', output
    assert_match "[mounts]", output
    assert_match "[streaming]", output

    # The printed default and the shipped node configuration both load (`config show` parses a
    # file with every key checked, and prints the result).
    (testpath/"default.toml").write output
    shell_output("#{bin}/darwin-cri --config #{testpath}/default.toml config show")
    shown = shell_output("#{bin}/darwin-cri --config #{pkgshare}/darwin-cri.toml config show")
    assert_match "/Applications", shown
  end
end
