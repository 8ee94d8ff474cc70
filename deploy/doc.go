// Package deploy holds no code: it is the home of Switchyard's deployment
// files and of the tests that check them against the real binary.
//
//	grafana/switchyard.json       a Grafana dashboard over the agents' Prometheus metrics
//	prometheus/alerts.yml         alerting rules (and alerts_test.yml, promtool unit tests)
//	compose/docker-compose.yml    three agents and two media nodes from the FROM-scratch image
//	k8s/                          a StatefulSet of three agents, media nodes, probes, PDB
//
// The tests scrape a running cluster's /metrics for every metric the
// dashboard and the rules name, run promtool when it is installed, bring
// the compose file up with docker-compose (killing the leader's container
// on the way), and check every Kubernetes container's arguments against
// the binary's real flags.
package deploy
