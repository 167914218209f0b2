// Package clustertest checks the Helm chart (charts/pkgfleet) on a real
// single-node Kubernetes: scripts/test-cluster.sh (make test's cluster
// phase) brings the node up (etcd, kube-apiserver, controller manager,
// scheduler, a containerd of its own, a kubelet, CoreDNS, CNI on a bridge
// of its own), imports the images of make images, and runs these tests
// with KUBECONFIG naming it. They install the chart with --wait, build the
// examples through the API, install them from pods, upgrade and roll back,
// delete a worker mid-build and the Redis pod, follow NOTES.txt's commands,
// start the worker under the restricted values, keep the artifacts in a
// bucket (ci/s3-values.yaml, a versitygw server on the host), and fail
// Redis over with Sentinel (ci/redis-sentinel-values.yaml).
//
// The tests build with the tag cluster, so that go test ./... does not run
// them; without a node (no KUBECONFIG) they fail under CI=true and skip
// otherwise. They own no product code. The node has no kube-proxy: Service
// cluster IPs do not route, so they reach the API by pod IP and, from pods,
// by a headless Service's DNS name.
package clustertest
