// Command coredns is CoreDNS with only the plugins the cluster phase's
// Corefile uses (scripts/test-cluster.sh), built from the module proxy at
// the version pinned in go.mod. CoreDNS's own main links every plugin,
// with the AWS, Azure and Google cloud SDKs: five to six minutes cold on
// two cores for a DNS server that answers for one node. A directive not
// listed here makes CoreDNS refuse the Corefile at startup ("Unknown
// directive"), so a Corefile that grows a plugin fails loudly: add it to
// both lists below. scripts/deploy-deps.sh builds this package once into
// ~/.cache/pkgfleet/tools/coredns-<key>/ (scripts/tools.sh's coredns_key).
package main

import (
	"log"

	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	// The plugins, each registering its directive.
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/kubernetes"
)

func main() {
	// The plugins above in CoreDNS's execution order (upstream's
	// plugin.cfg, core/dnsserver/zdirectives.go).
	directives := []string{"bind", "errors", "cache", "kubernetes", "forward"}
	if err := dnsserver.SetDirectives(directives); err != nil {
		log.Fatalf("coredns: setting the directives: %v", err)
	}
	coremain.Run()
}
