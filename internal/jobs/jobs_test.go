package jobs

import "testing"

func TestTaskIDIsDerivedFromSourceBuilderAndCommit(t *testing.T) {
	t.Parallel()
	a := TaskID("src", "pkg", "abc")
	if a != TaskID("src", "pkg", "abc") {
		t.Fatal("the same commit must get the same task id")
	}
	for _, other := range []string{TaskID("src", "pkg", "abd"), TaskID("src", "pkh", "abc"), TaskID("srd", "pkg", "abc"), TaskID("srcp", "kg", "abc")} {
		if other == a {
			t.Fatalf("different builds share task id %s", a)
		}
	}
	if Queue("r") != "builds:r" || Queue("python") != "builds:python" {
		t.Fatal("queue names must be builds:<language>")
	}
}
