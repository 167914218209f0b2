// Command etcd is etcd's own server main, built from the module proxy at the
// version pinned in go.mod, for the chart's admission test (a kube-apiserver
// needs an etcd behind it). scripts/deploy-deps.sh builds it once into
// ~/.cache/pkgfleet/tools/etcd-<version>/.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
