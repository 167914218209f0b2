package registry

import (
	"context"
	"testing"
)

// The cache lists what Builders lists after a create, an edit and a
// delete, decoding again only the edited record.
func TestBuilderCacheFollowsEditsAndDeletes(t *testing.T) {
	t.Parallel()
	r, ctx := setup(t), context.Background()
	if _, err := r.CreateSource(ctx, Source{Name: "src", Type: TypeGit}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a", "b", "c"} {
		if err := r.CreateBuilder(ctx, &Builder{Source: "src", Name: name, URL: "https://git.example.com/" + name + ".git"}); err != nil {
			t.Fatal(err)
		}
	}
	c := r.NewBuilderCache()
	first, err := c.Builders(ctx)
	if err != nil || len(first) != 3 {
		t.Fatalf("first listing: %d builders, %v", len(first), err)
	}
	if _, err := r.UpdateBuilder(ctx, "src", "b", func(b *Builder) error { b.URL = "https://git.example.com/moved.git"; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := r.DeleteBuilder(ctx, "src", "c"); err != nil {
		t.Fatal(err)
	}
	second, err := c.Builders(ctx)
	if err != nil || len(second) != 2 {
		t.Fatalf("after a delete: %d builders, %v", len(second), err)
	}
	if second[0] != first[0] {
		t.Error("the unchanged builder was decoded again")
	}
	if second[1].Name != "b" || second[1].URL != "https://git.example.com/moved.git" {
		t.Errorf("the edited builder is %+v", second[1])
	}
	if first[1].URL != "https://git.example.com/b.git" {
		t.Error("an edit changed a builder handed out before it")
	}
}
