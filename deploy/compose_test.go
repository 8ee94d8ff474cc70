package deploy_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/errcode"
	"github.com/switchyard/switchyard/internal/ports"
	"github.com/switchyard/switchyard/internal/testcluster"
	"github.com/switchyard/switchyard/pki"
)

// composeProject names this run's compose project (and image): the pid
// lets a later run remove what a crashed one left behind.
var composePrefix = regexp.MustCompile(`^sycompose([0-9]+)x`)

// composeEnv runs docker-compose for project p on deploy/compose.
type composeEnv struct {
	t       *testing.T
	project string
	env     []string
}

func (c *composeEnv) run(ctx context.Context, args ...string) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(cctx, "docker-compose", append([]string{"-p", c.project, "-f", filepath.Join("compose", "docker-compose.yml")}, args...)...)
	cmd.Env = append(os.Environ(), c.env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("docker-compose %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func dockerCmd(ctx context.Context, args ...string) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(cctx, "docker", args...)
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0") // the classic builder needs nothing from a registry for FROM scratch
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("docker %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// removeProject removes every container, network and volume of a compose
// project by its label, whatever state docker-compose left them in.
func removeProject(ctx context.Context, project string) error {
	var errs []error
	label := "label=com.docker.compose.project=" + project
	for _, q := range []struct{ list, rm []string }{
		{[]string{"ps", "-aq", "--filter", label}, []string{"rm", "-f", "-v"}},
		{[]string{"network", "ls", "-q", "--filter", label}, []string{"network", "rm"}},
		{[]string{"volume", "ls", "-q", "--filter", label}, []string{"volume", "rm", "-f"}},
	} {
		out, err := dockerCmd(ctx, q.list...)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ids := strings.Fields(out); len(ids) > 0 {
			if _, err := dockerCmd(ctx, append(q.rm, ids...)...); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// cleanStaleCompose removes projects and images of earlier runs whose
// process is gone.
func cleanStaleCompose(ctx context.Context, t *testing.T) {
	dead := func(name string) bool {
		m := composePrefix.FindStringSubmatch(name)
		if m == nil {
			return false
		}
		pid, _ := strconv.Atoi(m[1])
		return syscall.Kill(pid, 0) != nil
	}
	out, err := dockerCmd(ctx, "ps", "-a", "--format", `{{.Label "com.docker.compose.project"}}`)
	if err == nil {
		for _, p := range strings.Fields(out) {
			if dead(p) {
				t.Logf("removing stale compose project %s: %v", p, removeProject(ctx, p))
			}
		}
	}
	out, err = dockerCmd(ctx, "volume", "ls", "--format", `{{.Name}}`)
	if err == nil {
		for _, v := range strings.Fields(out) {
			if dead(v) {
				_, _ = dockerCmd(ctx, "volume", "rm", "-f", v)
			}
		}
	}
	out, err = dockerCmd(ctx, "images", "--format", "{{.Repository}}:{{.Tag}}")
	if err == nil {
		for _, img := range strings.Fields(out) {
			if dead(img) {
				_, _ = dockerCmd(ctx, "rmi", "-f", img)
			}
		}
	}
}

// needDocker skips (or fails under CI=true) without docker-compose and a
// working Docker engine.
func needDocker(t *testing.T) {
	t.Helper()
	need(t, "docker-compose", "docker-compose")
	need(t, "docker", "docker.io")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := dockerCmd(ctx, "info"); err != nil {
		msg := fmt.Sprintf("docker engine not usable (.ci/setup-chaos.sh starts dockerd): %v", err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
}

func hostPort(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// composeServices are the compose file's services besides the init
// container certs; agents have a data volume.
var composeServices = map[string]struct{ agent bool }{
	"n1": {true}, "n2": {true}, "n3": {true}, "m1": {false}, "m2": {false},
}

// checkCertMounts checks what each container of the project can read of
// the TLS material in certs (the host directory the init container
// writes): only the init container mounts the directory, with the CA key;
// every agent and media container has exactly three read-only bind
// mounts, ca.pem and its own certificate and key under /certs, besides an
// agent's data volume. It also lists /certs as each container sees it
// (the images have no shell: docker cp reads it), which must hold those
// three files and nothing else.
func checkCertMounts(ctx context.Context, t *testing.T, project, certs string) {
	t.Helper()
	resolve := func(p string) string {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			return r
		}
		return filepath.Clean(p)
	}
	certs = resolve(certs)
	out, err := dockerCmd(ctx, "ps", "-aq", "--filter", "label=com.docker.compose.project="+project)
	if err != nil {
		t.Fatal(err)
	}
	ids := strings.Fields(out)
	if len(ids) == 0 {
		t.Fatalf("no containers in project %s", project)
	}
	out, err = dockerCmd(ctx, append([]string{"inspect"}, ids...)...)
	if err != nil {
		t.Fatal(err)
	}
	var containers []struct {
		ID     string
		Config struct{ Labels map[string]string }
		Mounts []struct {
			Type, Source, Destination string
			RW                        bool
		}
	}
	if err := json.Unmarshal([]byte(out), &containers); err != nil {
		t.Fatalf("docker inspect: %v\n%s", err, out)
	}
	seen := map[string]bool{}
	for _, c := range containers {
		svc := c.Config.Labels["com.docker.compose.service"]
		seen[svc] = true
		if svc == "certs" {
			continue
		}
		kind, ok := composeServices[svc]
		if !ok {
			t.Errorf("container %.12s of unexpected service %q", c.ID, svc)
			continue
		}
		// host file → where the container sees it
		want := map[string]string{
			filepath.Join(certs, "ca.pem"):       "/certs/ca.pem",
			filepath.Join(certs, svc+".pem"):     "/certs/" + svc + ".pem",
			filepath.Join(certs, svc+"-key.pem"): "/certs/" + svc + "-key.pem",
		}
		for _, m := range c.Mounts {
			if m.Type == "volume" && kind.agent && m.Destination == "/data" {
				continue
			}
			src := resolve(m.Source)
			dst, ok := want[src]
			switch {
			case m.Type != "bind" || !ok:
				t.Errorf("%s mounts %s %s at %s: only ca.pem, %s.pem and %s-key.pem of %s may be mounted", svc, m.Type, m.Source, m.Destination, svc, svc, certs)
			case dst != m.Destination:
				t.Errorf("%s mounts %s at %s, want %s", svc, m.Source, m.Destination, dst)
			case m.RW:
				t.Errorf("%s mounts %s read-write", svc, m.Source)
			}
			delete(want, src)
		}
		for src := range want {
			t.Errorf("%s does not mount %s", svc, src)
		}
		// What the container itself finds in /certs.
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		tarball, err := exec.CommandContext(cctx, "docker", "cp", c.ID+":/certs", "-").Output()
		cancel()
		if err != nil {
			t.Errorf("%s: docker cp %s:/certs: %v", svc, c.ID, err)
			continue
		}
		var files []string
		tr := tar.NewReader(bytes.NewReader(tarball))
		for {
			h, err := tr.Next()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					t.Errorf("%s: reading docker cp's archive: %v", svc, err)
				}
				break
			}
			if h.Typeflag != tar.TypeDir {
				files = append(files, h.Name)
			}
		}
		slices.Sort(files)
		wantFiles := []string{"certs/" + svc + "-key.pem", "certs/" + svc + ".pem", "certs/ca.pem"}
		slices.Sort(wantFiles)
		if !slices.Equal(files, wantFiles) {
			t.Errorf("%s sees %v in /certs, want %v", svc, files, wantFiles)
		}
	}
	for svc := range composeServices {
		if !seen[svc] {
			t.Errorf("no container of service %s", svc)
		}
	}
	if !seen["certs"] {
		t.Errorf("no container of the init service certs")
	}
}

// TestComposeFailover brings deploy/compose up from the FROM-scratch image
// (built here from the static binary and the project's Dockerfile), waits
// for a leader and both media nodes, allocates, places a room, kills the leader's
// container, allocates again through the survivors, checks the first
// allocation survived, and tears everything down (also on failure).
func TestComposeFailover(t *testing.T) {
	needDocker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cleanStaleCompose(ctx, t)

	project := fmt.Sprintf("sycompose%dx%d", os.Getpid(), time.Now().UnixNano()%1e6)
	image := project + "img:latest"
	t0 := time.Now()
	bin := switchyardBinary(t)
	t.Logf("binary built in %v", time.Since(t0).Round(time.Millisecond))
	bctx := t.TempDir()
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	df, err := os.ReadFile(filepath.Join("..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bctx, "switchyard"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bctx, "Dockerfile"), df, 0o644); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	if _, err := dockerCmd(ctx, "build", "-q", "-t", image, bctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("image %s built in %v", image, time.Since(t0).Round(time.Millisecond))
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, _ = dockerCmd(cctx, "rmi", "-f", image)
	})

	httpAddr := map[string]string{}
	mediaAddr := map[string]string{} // server id -> host address of its WHIP/WHEP port
	// pickPorts chooses free host ports for every published port.
	certs := filepath.Join(t.TempDir(), "certs") // removed after compose down (cleanups run last-in first-out)
	pickPorts := func() []string {
		env := []string{"SWITCHYARD_IMAGE=" + image, "SWITCHYARD_CERTS=" + certs}
		for _, n := range []string{"N1", "N2", "N3"} {
			httpAddr[strings.ToLower(n)] = ports.Free(t, "tcp")
			env = append(env, "SWITCHYARD_"+n+"_HTTP="+hostPort(httpAddr[strings.ToLower(n)]),
				"SWITCHYARD_"+n+"_QUIC="+hostPort(ports.Free(t, "udp")))
		}
		for _, m := range []string{"M1", "M2"} {
			mediaAddr[strings.ToLower(m)] = ports.Free(t, "tcp")
			env = append(env, "SWITCHYARD_"+m+"_HTTP="+hostPort(mediaAddr[strings.ToLower(m)]))
		}
		return env
	}
	env := pickPorts()
	ce := &composeEnv{t: t, project: project, env: env}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if t.Failed() {
			out, _ := ce.run(cctx, "logs", "--no-color", "--tail", "40")
			t.Logf("compose logs:\n%s", out)
		}
		t0 := time.Now()
		if out, err := ce.run(cctx, "down", "-v", "--remove-orphans", "-t", "3"); err != nil {
			t.Logf("compose down: %v\n%s", err, out)
		}
		t.Logf("compose down took %v", time.Since(t0).Round(time.Millisecond))
		if err := removeProject(cctx, project); err != nil {
			t.Logf("remove project %s: %v", project, err)
		}
	})

	start := time.Now()
	for try := 1; ; try++ {
		out, err := ce.run(ctx, "up", "-d", "--no-build")
		if err == nil {
			break
		}
		// A host port taken between our probe and Docker's bind: pick
		// others and try again.
		if try < 3 && (strings.Contains(out, "already allocated") || strings.Contains(out, "address already in use")) {
			t.Logf("compose up, try %d: a host port was taken; retrying with others", try)
			_, _ = ce.run(ctx, "down", "-v", "--remove-orphans", "-t", "1")
			ce.env = pickPorts()
			continue
		}
		t.Fatal(err)
	}
	// The agents serve their API over HTTPS (they have TLS flags); the
	// init container wrote the CA.
	var tlsConf *tls.Config
	testcluster.Eventually(t, 60*time.Second, func() error {
		pem, err := os.ReadFile(filepath.Join(certs, "ca.pem"))
		if err != nil {
			return err
		}
		tlsConf, err = pki.CAClientConfig(pem)
		return err
	})
	// ACLs are on: the first operator token comes from bootstrap, which
	// answers once a leader is elected.
	var boot api.ACLTokenSecret
	testcluster.Eventually(t, 90*time.Second, func() error {
		bctx, bcancel := context.WithTimeout(ctx, 10*time.Second)
		defer bcancel()
		var err error
		boot, err = api.NewClient(httpAddr["n1"], httpAddr["n2"], httpAddr["n3"]).WithTLS(tlsConf).WithToken("").ACLBootstrap(bctx)
		return err
	})
	anon := api.NewClient(httpAddr["n1"], httpAddr["n2"], httpAddr["n3"]).WithTLS(tlsConf).WithToken("")
	if _, err := anon.Allocate(ctx, api.AllocateRequest{RequestID: "anonymous", Room: "x", Units: 1}); !errors.Is(err, errcode.ErrUnauthenticated) {
		t.Fatalf("an anonymous allocation with ACLs on: %v, want unauthenticated", err)
	}
	all := api.NewClient(httpAddr["n1"], httpAddr["n2"], httpAddr["n3"]).WithTLS(tlsConf).WithToken(boot.Secret)
	testcluster.Eventually(t, 90*time.Second, func() error {
		sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
		defer scancel()
		st, err := all.Status(sctx)
		if err != nil || st.Leader == "" || len(st.Members) != 3 {
			return fmt.Errorf("status %+v: %v", st, err)
		}
		servers, err := all.Servers(sctx, false)
		if err != nil {
			return err
		}
		active := 0
		for _, s := range servers {
			if s.State == "active" {
				active++
			}
		}
		if active != 2 {
			return fmt.Errorf("%d active media servers: %+v", active, servers)
		}
		return nil
	})
	checkCertMounts(ctx, t, project, certs)
	a1, err := all.Allocate(ctx, api.AllocateRequest{RequestID: "compose-1", Room: "demo", Units: 2})
	if err != nil {
		t.Fatalf("allocate: %v", err)
	}
	t.Logf("compose up → first allocation (on %s): %v", a1.Server, time.Since(start).Round(time.Millisecond))
	// An application's front door: a room placed on a media node, with the
	// WHIP and WHEP URLs its clients use.
	r1, err := all.PlaceRoom(ctx, "meeting", api.PlaceRoomRequest{Units: 1})
	if err != nil {
		t.Fatalf("place a room: %v", err)
	}
	if r1.SFU != api.SFUSwitchyard || (r1.Server != "m1" && r1.Server != "m2") || r1.AllocationID == "" ||
		!strings.HasSuffix(fmt.Sprint(r1.URLs["whip"]), ":8081/whip/meeting") || !strings.HasSuffix(fmt.Sprint(r1.URLs["whep"]), ":8081/whep/meeting") {
		t.Fatalf("room placement: %+v", r1)
	}
	checkWHIPNeedsToken(ctx, t, all, mediaAddr[r1.Server], r1.Room)

	st, err := all.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	leader := st.Leader
	kstart := time.Now()
	if _, err := ce.run(ctx, "kill", leader); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	t.Logf("docker-compose kill %s took %v", leader, killed.Sub(kstart).Round(time.Millisecond))
	var survivors []string
	for id, a := range httpAddr {
		if id != leader {
			survivors = append(survivors, a)
		}
	}
	rest := api.NewClient(survivors...).WithTLS(tlsConf).WithToken(boot.Secret)
	var a2 api.Allocation
	testcluster.Eventually(t, 60*time.Second, func() error {
		actx, acancel := context.WithTimeout(ctx, 10*time.Second)
		defer acancel()
		var err error
		a2, err = rest.Allocate(actx, api.AllocateRequest{RequestID: "compose-2", Room: "demo-2", Units: 2})
		return err
	})
	t.Logf("leader %s's container killed → next allocation (on %s): %v", leader, a2.Server, time.Since(killed).Round(time.Millisecond))
	st2, err := rest.Status(ctx)
	if err != nil || st2.Leader == "" || st2.Leader == leader {
		t.Fatalf("after killing %s: status %+v %v", leader, st2, err)
	}
	got, err := rest.Allocations(ctx, api.AllocationListOptions{Room: "demo"})
	if err != nil || len(got) != 1 || got[0].ID != a1.ID || got[0].State != "active" {
		t.Fatalf("the allocation made before the kill: %+v %v", got, err)
	}
	// The room placed before the kill stays where it was (placement is
	// sticky while its server lives), and a new room is placed.
	r2, err := rest.PlaceRoom(ctx, "meeting", api.PlaceRoomRequest{Units: 1})
	if err != nil || r2.Server != r1.Server || r2.AllocationID != r1.AllocationID || r2.Moved {
		t.Fatalf("the room placed before the kill, placed again: %+v %v (before: %+v)", r2, err, r1)
	}
	if r3, err := rest.PlaceRoom(ctx, "meeting-2", api.PlaceRoomRequest{Units: 1}); err != nil || r3.AllocationID == "" || r3.URLs["whip"] == nil {
		t.Fatalf("a room placed after the kill: %+v %v", r3, err)
	}
}

// checkWHIPNeedsToken checks that the media node at addr (its published
// host port) refuses a WHIP offer for room without a token (401) and with
// a play token (403), and takes a publish token minted for the room past
// authorization: the offer sent is not SDP, so the node answers 400 once
// the token passed.
func checkWHIPNeedsToken(ctx context.Context, t *testing.T, cl *api.Client, addr, room string) {
	t.Helper()
	post := func(token string) (int, string) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/whip/"+room, strings.NewReader("not an SDP offer"))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/sdp")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("WHIP to %s: %v", addr, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return resp.StatusCode, strings.TrimSpace(string(body))
	}
	if code, body := post(""); code != http.StatusUnauthorized {
		t.Fatalf("WHIP without a token: HTTP %d %s, want 401", code, body)
	}
	mint := func(action string) string {
		tok, err := cl.MintMediaToken(ctx, api.MintRequest{Room: room, Action: action, TTLMs: time.Minute.Milliseconds()})
		if err != nil {
			t.Fatalf("mint a %s token: %v", action, err)
		}
		return tok.Token
	}
	if code, body := post(mint("play")); code != http.StatusForbidden {
		t.Fatalf("WHIP with a play token: HTTP %d %s, want 403", code, body)
	}
	if code, body := post(mint("publish")); code != http.StatusBadRequest {
		t.Fatalf("WHIP with a publish token and a bad offer: HTTP %d %s, want 400 (the token accepted)", code, body)
	}
}
