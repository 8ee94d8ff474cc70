package deploy_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/switchyard/switchyard/internal/ports"
	"github.com/switchyard/switchyard/internal/testcluster"
	"github.com/switchyard/switchyard/pki"
)

// k8sObject is the part of a manifest the checks read.
type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Spec struct {
		// Service
		ClusterIP                string         `yaml:"clusterIP"`
		PublishNotReadyAddresses bool           `yaml:"publishNotReadyAddresses"`
		Selector                 yaml.Node      `yaml:"selector"`
		Ports                    []k8sPort      `yaml:"ports"`
		MaxUnavailable           *int           `yaml:"maxUnavailable"`
		ServiceName              string         `yaml:"serviceName"`
		Replicas                 *int           `yaml:"replicas"`
		PodManagementPolicy      string         `yaml:"podManagementPolicy"`
		Template                 k8sPodTemplate `yaml:"template"`
		VolumeClaimTemplates     []yaml.Node    `yaml:"volumeClaimTemplates"`
	} `yaml:"spec"`
}

type k8sPort struct {
	Name          string `yaml:"name"`
	Port          int    `yaml:"port"`
	ContainerPort int    `yaml:"containerPort"`
	TargetPort    any    `yaml:"targetPort"`
	Protocol      string `yaml:"protocol"`
}

type k8sProbe struct {
	HTTPGet *struct {
		Path   string `yaml:"path"`
		Port   any    `yaml:"port"`
		Scheme string `yaml:"scheme"`
	} `yaml:"httpGet"`
	TCPSocket *struct {
		Port any `yaml:"port"`
	} `yaml:"tcpSocket"`
}

type k8sContainer struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Env   []struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	} `yaml:"env"`
	Ports          []k8sPort `yaml:"ports"`
	LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
	ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
	VolumeMounts   []struct {
		Name        string `yaml:"name"`
		MountPath   string `yaml:"mountPath"`
		SubPath     string `yaml:"subPath"`
		SubPathExpr string `yaml:"subPathExpr"`
		ReadOnly    bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
}

type k8sPodTemplate struct {
	Metadata struct {
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Spec struct {
		Containers []k8sContainer `yaml:"containers"`
		Volumes    []struct {
			Name   string `yaml:"name"`
			Secret *struct {
				SecretName string `yaml:"secretName"`
			} `yaml:"secret"`
		} `yaml:"volumes"`
	} `yaml:"spec"`
}

// readManifests parses every document of every deploy/k8s/*.yaml.
func readManifests(t *testing.T) []k8sObject {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join("k8s", "*.yaml"))
	if len(files) == 0 {
		t.Fatal("no manifests in deploy/k8s")
	}
	var out []k8sObject
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var o k8sObject
			err := dec.Decode(&o)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if o.Kind == "" || o.APIVersion == "" || o.Metadata.Name == "" {
				t.Fatalf("%s: a document without kind, apiVersion or name: %+v", f, o)
			}
			out = append(out, o)
		}
	}
	return out
}

// flagsOf returns the long flags `switchyard <sub> --help` lists.
func flagsOf(t *testing.T, bin, sub string) map[string]bool {
	t.Helper()
	out, err := exec.Command(bin, sub, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("switchyard %s --help: %v\n%s", sub, err, out)
	}
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z0-9-]+)`).FindAllStringSubmatch(string(out), -1) {
		flags[m[1]] = true
	}
	if len(flags) < 5 {
		t.Fatalf("switchyard %s --help lists only %v", sub, flags)
	}
	return flags
}

// argValues maps each --flag=value argument to its value.
func argValues(t *testing.T, where string, args []string, known map[string]bool) map[string]string {
	t.Helper()
	vals := map[string]string{}
	for _, a := range args[1:] {
		if !strings.HasPrefix(a, "--") {
			t.Errorf("%s: argument %q: write every flag as --name=value", where, a)
			continue
		}
		name, val, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !known[name] {
			t.Errorf("%s: --%s is not a flag of `switchyard %s`", where, name, args[0])
		}
		vals[name] = val
	}
	return vals
}

func portNamed(ports []k8sPort, name string) (k8sPort, bool) {
	for _, p := range ports {
		if p.Name == name {
			return p, true
		}
	}
	return k8sPort{}, false
}

// TestK8sManifests checks deploy/k8s without a cluster (kubectl is not
// available here): every document parses; each container's arguments are
// real flags of the binary's subcommand, and every $(VAR) they use is set;
// the agents' StatefulSet starts its replicas in parallel, joins exactly
// its replicas' stable DNS names with --bootstrap-expect equal to the
// replica count, probes liveness on /v1/health/live only and readiness on
// /v1/health/ready, on the port --http-addr listens on; the headless
// Service publishes not-ready addresses; the PodDisruptionBudget allows
// one agent down; media nodes (a StatefulSet too) point at the same agents
// and each presents the media certificate of its pod name.
func TestK8sManifests(t *testing.T) {
	bin := switchyardBinary(t)
	objs := readManifests(t)
	byKind := map[string][]k8sObject{}
	for _, o := range objs {
		byKind[o.Kind] = append(byKind[o.Kind], o)
	}
	// The agents and the media nodes are each a StatefulSet: a media
	// node's stable pod name is its server id and names its certificate.
	sets := map[string]k8sObject{}
	for _, o := range byKind["StatefulSet"] {
		if cs := o.Spec.Template.Spec.Containers; len(cs) > 0 && len(cs[0].Args) > 0 {
			sets[cs[0].Args[0]] = o
		}
	}
	if len(byKind["StatefulSet"]) != 2 || len(sets) != 2 || len(byKind["Deployment"]) != 0 || len(byKind["PodDisruptionBudget"]) != 1 {
		t.Fatalf("want two StatefulSets (agents, media), one PodDisruptionBudget; have %v", func() map[string]int {
			m := map[string]int{}
			for k, v := range byKind {
				m[k] = len(v)
			}
			return m
		}())
	}
	flags := map[string]map[string]bool{"agent": flagsOf(t, bin, "agent"), "media": flagsOf(t, bin, "media")}
	varRef := regexp.MustCompile(`\$\(([A-Z_]+)\)`)

	// Agents and media nodes mount separate Secrets: media pods never see
	// an agent's key.
	secretOf := map[string]string{"agent": "switchyard-tls", "media": "switchyard-media-tls"}
	check := func(o k8sObject, c k8sContainer) map[string]string {
		where := o.Kind + "/" + o.Metadata.Name + "/" + c.Name
		if len(c.Args) == 0 || flags[c.Args[0]] == nil {
			t.Fatalf("%s: args must start with agent or media: %v", where, c.Args)
		}
		vals := argValues(t, where, c.Args, flags[c.Args[0]])
		env := map[string]bool{}
		for _, e := range c.Env {
			for _, m := range varRef.FindAllStringSubmatch(e.Value, -1) {
				if !env[m[1]] {
					t.Errorf("%s: env %s uses $(%s) before it is set", where, e.Name, m[1])
				}
			}
			env[e.Name] = true
		}
		for _, a := range c.Args {
			for _, m := range varRef.FindAllStringSubmatch(a, -1) {
				if !env[m[1]] {
					t.Errorf("%s: argument %q uses $(%s), which the container's env does not set", where, a, m[1])
				}
			}
		}
		for _, f := range []string{"tls-ca", "tls-cert", "tls-key"} {
			if !strings.HasPrefix(vals[f], "/certs/") {
				t.Errorf("%s: --%s=%q: want a file of the certs volume", where, f, vals[f])
			}
		}
		// Each TLS file is one file of the right Secret, mounted read-only
		// by itself; the certificate and key are the pod's own (named
		// after it), and no mount exposes the whole Secret, which holds
		// every sibling's key.
		secretVol := map[string]string{}
		for _, v := range o.Spec.Template.Spec.Volumes {
			if v.Secret != nil {
				secretVol[v.Name] = v.Secret.SecretName
			}
		}
		for _, vm := range c.VolumeMounts {
			if secretVol[vm.Name] != "" && vm.SubPath == "" && vm.SubPathExpr == "" {
				t.Errorf("%s: %s mounts the whole Secret %s (every pod's key)", where, vm.MountPath, secretVol[vm.Name])
			}
			for _, m := range varRef.FindAllStringSubmatch(vm.SubPathExpr, -1) {
				if !env[m[1]] {
					t.Errorf("%s: subPathExpr %q uses $(%s), which the container's env does not set", where, vm.SubPathExpr, m[1])
				}
			}
		}
		for f, want := range map[string]string{"tls-ca": "ca.pem", "tls-cert": "$(POD_NAME).pem", "tls-key": "$(POD_NAME)-key.pem"} {
			found := false
			for _, vm := range c.VolumeMounts {
				if vm.MountPath != vals[f] {
					continue
				}
				found = true
				if got := vm.SubPath + vm.SubPathExpr; got != want || secretVol[vm.Name] != secretOf[c.Args[0]] || !vm.ReadOnly {
					t.Errorf("%s: --%s=%s is %q of volume %s (Secret %q, read-only %v); want %q of the Secret %s, read-only",
						where, f, vals[f], got, vm.Name, secretVol[vm.Name], vm.ReadOnly, want, secretOf[c.Args[0]])
				}
			}
			if !found {
				t.Errorf("%s: --%s=%s is not a mounted file", where, f, vals[f])
			}
		}
		// The probes hit the port the HTTP listener is on.
		port := vals["http-addr"][strings.LastIndex(vals["http-addr"], ":")+1:]
		hp, ok := portNamed(c.Ports, "http")
		if !ok || strconv.Itoa(hp.ContainerPort) != port {
			t.Errorf("%s: container port http %+v does not match --http-addr=%s", where, hp, vals["http-addr"])
		}
		for name, p := range map[string]*k8sProbe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
			if p == nil {
				t.Errorf("%s: no %s probe", where, name)
				continue
			}
			var pp any
			switch {
			case p.HTTPGet != nil:
				pp = p.HTTPGet.Port
			case p.TCPSocket != nil:
				pp = p.TCPSocket.Port
			}
			if fmt.Sprint(pp) != "http" && fmt.Sprint(pp) != port {
				t.Errorf("%s: %s probe port %v is not the HTTP port", where, name, pp)
			}
		}
		return vals
	}

	// Agents.
	sts, ok := sets["agent"]
	if !ok {
		t.Fatal("no StatefulSet runs agent")
	}
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 3 || sts.Spec.PodManagementPolicy != "Parallel" {
		t.Errorf("StatefulSet: replicas %v, podManagementPolicy %q; want 3, Parallel", sts.Spec.Replicas, sts.Spec.PodManagementPolicy)
	}
	if len(sts.Spec.VolumeClaimTemplates) == 0 {
		t.Error("StatefulSet: no volumeClaimTemplates for the data dir")
	}
	if len(sts.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("StatefulSet: want one container")
	}
	ac := sts.Spec.Template.Spec.Containers[0]
	av := check(sts, ac)
	if ac.Args[0] != "agent" {
		t.Fatalf("StatefulSet runs %q, not agent", ac.Args[0])
	}
	if ac.LivenessProbe == nil || ac.LivenessProbe.HTTPGet == nil || ac.LivenessProbe.HTTPGet.Path != "/v1/health/live" {
		t.Errorf("agent liveness probe must be GET /v1/health/live (never the leader or readiness): %+v", ac.LivenessProbe)
	}
	if ac.ReadinessProbe == nil || ac.ReadinessProbe.HTTPGet == nil || ac.ReadinessProbe.HTTPGet.Path != "/v1/health/ready" {
		t.Errorf("agent readiness probe must be GET /v1/health/ready: %+v", ac.ReadinessProbe)
	}
	// With the TLS flags the agent's API is HTTPS unless --http-plain.
	if _, plain := av["http-plain"]; !plain {
		for name, p := range map[string]*k8sProbe{"liveness": ac.LivenessProbe, "readiness": ac.ReadinessProbe} {
			if p != nil && p.HTTPGet != nil && p.HTTPGet.Scheme != "HTTPS" {
				t.Errorf("agent %s probe scheme %q: the API is HTTPS with the TLS flags", name, p.HTTPGet.Scheme)
			}
		}
	}
	if av["bootstrap-expect"] != strconv.Itoa(*sts.Spec.Replicas) {
		t.Errorf("--bootstrap-expect=%s with %d replicas", av["bootstrap-expect"], *sts.Spec.Replicas)
	}
	if av["id"] != "$(POD_NAME)" || av["data-dir"] == "" {
		t.Errorf("agent --id=%q --data-dir=%q", av["id"], av["data-dir"])
	}
	var wantJoin []string
	for i := 0; i < *sts.Spec.Replicas; i++ {
		wantJoin = append(wantJoin, fmt.Sprintf("%s-%d.%s:7501", sts.Metadata.Name, i, sts.Spec.ServiceName))
	}
	if av["join"] != strings.Join(wantJoin, ",") {
		t.Errorf("--join=%s; want the replicas' stable names %s", av["join"], strings.Join(wantJoin, ","))
	}
	for _, f := range []string{"raft-addr", "http-addr", "quic-addr"} {
		if !strings.HasPrefix(av[f], "$(SELF):") {
			t.Errorf("--%s=%s: want this pod's stable name", f, av[f])
		}
		port := av[f][strings.LastIndex(av[f], ":")+1:]
		name := strings.TrimSuffix(f, "-addr")
		if p, ok := portNamed(ac.Ports, name); !ok || strconv.Itoa(p.ContainerPort) != port {
			t.Errorf("container port %s %+v does not match --%s=%s", name, p, f, av[f])
		}
	}
	if !slices.ContainsFunc(ac.Env, func(e struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	}) bool {
		return e.Name == "SELF" && strings.HasPrefix(e.Value, "$(POD_NAME)."+sts.Spec.ServiceName+".")
	}) {
		t.Errorf("SELF must be the pod's name under the headless service %s", sts.Spec.ServiceName)
	}

	// Services and the PDB select the agents.
	var headless bool
	for _, s := range byKind["Service"] {
		if s.Metadata.Name == sets["media"].Spec.ServiceName {
			continue // the media nodes' headless Service, checked below
		}
		var sel map[string]string
		if err := s.Spec.Selector.Decode(&sel); err != nil {
			t.Fatalf("Service %s selector: %v", s.Metadata.Name, err)
		}
		for k, v := range sel {
			if sts.Spec.Template.Metadata.Labels[k] != v {
				t.Errorf("Service %s selects %s=%s, which the agents' pods lack", s.Metadata.Name, k, v)
			}
		}
		if s.Metadata.Name == sts.Spec.ServiceName {
			headless = s.Spec.ClusterIP == "None" && s.Spec.PublishNotReadyAddresses
			for _, name := range []string{"raft", "http", "quic"} {
				if _, ok := portNamed(s.Spec.Ports, name); !ok {
					t.Errorf("headless Service lacks port %s", name)
				}
			}
		}
	}
	if !headless {
		t.Errorf("Service %s must be headless (clusterIP: None) and publish not-ready addresses", sts.Spec.ServiceName)
	}
	pdb := byKind["PodDisruptionBudget"][0]
	if pdb.Spec.MaxUnavailable == nil || *pdb.Spec.MaxUnavailable != 1 {
		t.Errorf("PodDisruptionBudget maxUnavailable %v; want 1", pdb.Spec.MaxUnavailable)
	}
	var pdbSel struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	}
	if err := pdb.Spec.Selector.Decode(&pdbSel); err != nil || len(pdbSel.MatchLabels) == 0 {
		t.Errorf("PodDisruptionBudget selector: %v", err)
	}
	for k, v := range pdbSel.MatchLabels {
		if sts.Spec.Template.Metadata.Labels[k] != v {
			t.Errorf("PodDisruptionBudget selects %s=%s, which the agents' pods lack", k, v)
		}
	}

	// Media nodes: each pod acts as the server id of its pod name, with
	// the media certificate of that name.
	ms, ok := sets["media"]
	if !ok {
		t.Fatal("no StatefulSet runs media")
	}
	mc := ms.Spec.Template.Spec.Containers[0]
	mv := check(ms, mc)
	if mc.Args[0] != "media" || mv["capacity"] == "" || mv["id"] != "$(POD_NAME)" {
		t.Errorf("media container: args %v", mc.Args)
	}
	mediaHeadless := false
	for _, s := range byKind["Service"] {
		if s.Metadata.Name != ms.Spec.ServiceName {
			continue
		}
		var sel map[string]string
		if err := s.Spec.Selector.Decode(&sel); err != nil {
			t.Fatalf("Service %s selector: %v", s.Metadata.Name, err)
		}
		mediaHeadless = s.Spec.ClusterIP == "None" && len(sel) > 0
		for k, v := range sel {
			if ms.Spec.Template.Metadata.Labels[k] != v {
				t.Errorf("Service %s selects %s=%s, which the media pods lack", s.Metadata.Name, k, v)
			}
		}
	}
	if ms.Spec.ServiceName == "" || !mediaHeadless {
		t.Errorf("media StatefulSet: serviceName %q must name a headless Service selecting its pods", ms.Spec.ServiceName)
	}
	if mv["allocators"] != av["join"] {
		t.Errorf("media --allocators=%s; want the agents %s", mv["allocators"], av["join"])
	}
	t.Logf("checked %d objects; agent flags used: %d, media flags used: %d", len(objs), len(av), len(mv))

	// The agent starts with exactly these arguments (names swapped for
	// loopback addresses, volumes for temp dirs): it serves liveness at
	// once and is not ready while its peers are missing.
	dir := t.TempDir()
	certs := filepath.Join(dir, "certs")
	if out, err := exec.Command(bin, "tls", "init", "--out", certs, "--names", "switchyard-0", "--media", "switchyard-media-0").CombinedOutput(); err != nil {
		t.Fatalf("tls init: %v\n%s", err, out)
	}
	// The container's files under /certs, as its mounts give them.
	mounted := filepath.Join(dir, "mounted")
	if err := os.MkdirAll(mounted, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, vm := range ac.VolumeMounts {
		rel, ok := strings.CutPrefix(vm.MountPath, "/certs/")
		if !ok {
			continue
		}
		b, err := os.ReadFile(filepath.Join(certs, strings.ReplaceAll(vm.SubPath+vm.SubPathExpr, "$(POD_NAME)", "switchyard-0")))
		if err != nil {
			t.Fatalf("mount %s: %v", vm.MountPath, err)
		}
		if err := os.WriteFile(filepath.Join(mounted, rel), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	httpAddr := ports.Free(t, "tcp")
	joins := []string{httpAddr, ports.Free(t, "tcp"), ports.Free(t, "tcp")}
	repl := strings.NewReplacer("$(POD_NAME)", "switchyard-0", "/certs/", mounted+"/", "=/data", "="+filepath.Join(dir, "data"),
		"$(SELF):7301", ports.Free(t, "tcp"), "$(SELF):7501", httpAddr, "$(SELF):7601", ports.Free(t, "udp"),
		av["join"], strings.Join(joins, ","))
	args := make([]string, len(ac.Args))
	for i, a := range ac.Args {
		args[i] = repl.Replace(a)
	}
	cmd := exec.Command(bin, args...)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("agent log:\n%s", logs.String())
		}
	}()
	pem, err := os.ReadFile(filepath.Join(certs, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	tc, err := pki.CAClientConfig(pem)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
	testcluster.Eventually(t, 30*time.Second, func() error {
		if code, err := httpStatus(hc, "https://"+httpAddr+"/v1/health/live"); err != nil || code != 200 {
			return fmt.Errorf("live: %d %v", code, err)
		}
		if code, err := httpStatus(hc, "https://"+httpAddr+"/v1/health/ready"); err != nil || code != 503 {
			return fmt.Errorf("ready without peers: %d %v", code, err)
		}
		return nil
	})
}

func httpStatus(c *http.Client, url string) (int, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
