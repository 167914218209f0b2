package api

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pkgfleet/pkgfleet/internal/apiv1"
	"github.com/pkgfleet/pkgfleet/internal/roster"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
	"github.com/redis/go-redis/v9"
)

// many makes source src with n git-builders b000… and source other with
// three, the index of builders then dropped as a store from before it
// would have none.
func (h *harness) many(n int) {
	h.t.Helper()
	for _, src := range []string{"src", "other"} {
		if code, body := h.req("POST", "/api/v1/sources", `{"name":"`+src+`","type":"git"}`, ""); code != 201 {
			h.t.Fatalf("create source: %d %s", code, body)
		}
	}
	for i := range n + 3 {
		src, name := "src", fmt.Sprintf("b%03d", i)
		if i >= n {
			src = "other"
		}
		if code, body := h.req("POST", "/api/v1/sources/"+src+"/git-builders", `{"name":"`+name+`","url":"https://example.invalid/r"}`, ""); code != 201 {
			h.t.Fatalf("create builder %d: %d %s", i, code, body)
		}
	}
	if err := h.rdb.Del(context.Background(), "pkgfleet:builder-index").Err(); err != nil {
		h.t.Fatal(err)
	}
}

func TestBuilderListIsPagedAndItsCursorsListEachOnce(t *testing.T) {
	t.Parallel()
	h := setup(t, false, map[string]string{"PKGFLEET_HTTP_WRITERATE": "0"})
	h.many(250)
	var names []string
	cursor, pages := "", 0
	for {
		code, body := h.req("GET", "/api/v1/sources/src/git-builders?cursor="+cursor, "", "")
		var page apiv1.Builders
		if code != 200 || json.Unmarshal([]byte(body), &page) != nil {
			t.Fatalf("page %d: %d %.200s", pages, code, body)
		}
		if pages == 0 && (len(page.Builders) != 100 || page.NextCursor == "") {
			t.Fatalf("first page: %d builders, next cursor %q; want 100 and a cursor", len(page.Builders), page.NextCursor)
		}
		for _, b := range page.Builders {
			if b.Source != "src" {
				t.Fatalf("builder %s/%s listed in source src", b.Source, b.Name)
			}
			names = append(names, b.Name)
		}
		pages++
		if cursor = page.NextCursor; cursor == "" || pages > 10 {
			break
		}
	}
	if len(names) != 250 || !slices.IsSorted(names) || len(slices.Compact(slices.Clone(names))) != 250 || pages != 3 {
		t.Fatalf("%d pages listed %d builders (sorted %v), want 3 pages of the 250, each once", pages, len(names), slices.IsSorted(names))
	}
	for _, c := range []struct{ query, want string }{
		{"limit=0", "limit must be"}, {"limit=1001", "limit must be"}, {"cursor=!!", "cursor"},
	} {
		if code, msg := h.req("GET", "/api/v1/sources/src/git-builders?"+c.query, "", ""); code != 400 || !strings.Contains(msg, c.want) {
			t.Errorf("?%s: %d %.200q, want 400 naming %s", c.query, code, msg, c.want)
		}
	}
	if code, body := h.req("GET", "/api/v1/sources/other/git-builders?limit=2", "", ""); code != 200 || strings.Count(body, `"source": "other"`) != 2 {
		t.Errorf("other source, limit 2: %d %.300s", code, body)
	}
}

func TestBuildsPageShowsABoundedNumberOfBuildersWithANextLink(t *testing.T) {
	t.Parallel()
	h := setup(t, false, map[string]string{"PKGFLEET_HTTP_WRITERATE": "0"})
	h.many(120)
	builder := regexp.MustCompile(`id="builder-([a-z]+)-(b[0-9]+)"`)
	next := regexp.MustCompile(`id="next-page" href="(/\?after=[^"]+)"`)
	seen := map[string]int{}
	path, pages := "/", 0
	for path != "" && pages < 10 {
		req, _ := http.NewRequest("GET", h.url+path, nil)
		req.Header.Set("Accept", "text/html")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		found := builder.FindAllStringSubmatch(string(body), -1)
		if resp.StatusCode != 200 || len(found) > pageBuilders {
			t.Fatalf("page %s: %d with %d builders, want 200 and at most %d", path, resp.StatusCode, len(found), pageBuilders)
		}
		for _, m := range found {
			seen[m[1]+"/"+m[2]]++
		}
		path = ""
		if m := next.FindSubmatch(body); m != nil {
			path = strings.ReplaceAll(string(m[1]), "&amp;", "&")
		}
		pages++
	}
	if len(seen) != 123 || pages != 3 {
		t.Fatalf("%d pages showed %d builders, want 3 pages showing all 123", pages, len(seen))
	}
	for k, n := range seen {
		if n != 1 {
			t.Fatalf("builder %s shown on %d pages", k, n)
		}
	}
}

func TestASourceHoldsAtMostMaxBuildersPerSource(t *testing.T) {
	t.Parallel()
	h := setup(t, false, map[string]string{"PKGFLEET_GIT_MAXBUILDERSPERSOURCE": "3"})
	for _, src := range []string{"src", "other"} {
		if code, body := h.req("POST", "/api/v1/sources", `{"name":"`+src+`","type":"git"}`, ""); code != 201 {
			t.Fatalf("create source: %d %s", code, body)
		}
	}
	create := func(src, name string) (int, string) {
		return h.req("POST", "/api/v1/sources/"+src+"/git-builders", `{"name":"`+name+`","url":"https://example.invalid/r"}`, "")
	}
	for i := range 3 {
		if code, body := create("src", fmt.Sprint("b", i)); code != 201 {
			t.Fatalf("builder %d: %d %s", i, code, body)
		}
	}
	if code, msg := create("src", "b3"); code != 409 || !strings.Contains(msg, "Git.MaxBuildersPerSource") {
		t.Fatalf("a fourth builder: %d %q, want 409 naming Git.MaxBuildersPerSource", code, msg)
	}
	if code, body := create("other", "b0"); code != 201 {
		t.Fatalf("another source's builder: %d %s", code, body)
	}
}

func TestBuildsPageDoesNotWalkTheFleetForTheBudget(t *testing.T) {
	t.Parallel()
	h := setup(t, false, map[string]string{"PKGFLEET_HTTP_WRITERATE": "0"})
	h.many(pageBuilders)
	w := roster.Worker{Name: "w", Slots: 1, Languages: map[string]roster.Language{"r": {Sandbox: "user-namespace"}}}
	if err := roster.Heartbeat(context.Background(), h.rdb, w, time.Minute); err != nil {
		t.Fatal(err)
	}
	view := func() string {
		t.Helper()
		req, _ := http.NewRequest("GET", h.url+"/", nil)
		req.Header.Set("Accept", "text/html")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("/: %d", resp.StatusCode)
		}
		return string(body)
	}
	budget := regexp.MustCompile(`id="ppm-required">([^<]*)<`)
	required := func(page string) string {
		t.Helper()
		m := budget.FindStringSubmatch(page)
		if m == nil {
			t.Fatalf("no budget on the page:\n%.2000s", page)
		}
		return html.UnescapeString(m[1])
	}
	view() // the first view counts a store written before the counts
	counter := &testenv.CommandCounter{}
	h.rdb.AddHook(counter)
	var readsOfEveryBuilder atomic.Int64
	h.rdb.AddHook(keyWatch{key: "pkgfleet:builders", cmds: []string{"hvals", "hgetall", "hkeys"}, n: &readsOfEveryBuilder})
	if got := required(view()); got != fmt.Sprintf("((0 × 25) + %d) × 2 = %d", pageBuilders+3, 2*(pageBuilders+3)) {
		t.Fatalf("budget %q, want all %d commit builders counted", got, pageBuilders+3)
	}
	before, _ := counter.Total()
	// 100 more builders, after the first page's: the view's work is the
	// page's builders, never the fleet's.
	for i := range 100 {
		if code, body := h.req("POST", "/api/v1/sources/src/git-builders", fmt.Sprintf(`{"name":"z%03d","url":"https://example.invalid/r"}`, i), ""); code != 201 {
			t.Fatalf("create builder: %d %s", code, body)
		}
	}
	counter.Reset()
	if got := required(view()); got != fmt.Sprintf("((0 × 25) + %d) × 2 = %d", pageBuilders+103, 2*(pageBuilders+103)) {
		t.Fatalf("budget %q after 100 more builders, want %d commit builders", got, pageBuilders+103)
	}
	after, by := counter.Total()
	if walks := readsOfEveryBuilder.Load(); walks != 0 || after > before {
		t.Fatalf("a view with 100 more builders sent %d Redis commands (%v), before %d", after, by, before)
	}
	t.Logf("a view of the first page: %d Redis commands, with %d or %d builders", after, pageBuilders+3, pageBuilders+103)
}

// keyWatch is a go-redis hook that counts the commands among cmds that
// read key.
type keyWatch struct {
	key  string
	cmds []string
	n    *atomic.Int64
}

func (k keyWatch) DialHook(next redis.DialHook) redis.DialHook { return next }

func (k keyWatch) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if args := cmd.Args(); len(args) > 1 && args[1] == k.key && slices.Contains(k.cmds, strings.ToLower(cmd.Name())) {
			k.n.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (k keyWatch) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
