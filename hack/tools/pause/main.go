// Command pause holds a pod's namespaces for the test kit's node: it waits
// until SIGTERM or SIGINT and exits 0. Built static (CGO_ENABLED=0), it is the
// only file of the node's sandbox image, so the node pulls nothing.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	<-signals
}
