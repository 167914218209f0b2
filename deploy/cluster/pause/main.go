// Command pause is the cluster phase's pod sandbox process
// (scripts/test-cluster.sh imports it as localhost/pkgfleet-pause:3.10 and
// makes it the sandbox image containerd asks for): it holds the pod's namespaces open
// and exits when the runtime stops the sandbox. There is no registry here
// to pull the real one from. It reaps no
// orphans: no pod of the phase shares its PID namespace.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
