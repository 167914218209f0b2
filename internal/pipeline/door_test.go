package pipeline

import "testing"

// A builder's index URL never carries credentials; the workers' setting
// may, and lends them only to the same scheme and host.
func TestBuilderIndexBorrowsTheSettingsCredentialsForTheSameHostOnly(t *testing.T) {
	t.Parallel()
	setting := "https://user:token@mirror.invalid/simple/"
	for _, tc := range []struct{ override, want string }{
		{"https://mirror.invalid/team/simple/", "https://user:token@mirror.invalid/team/simple/"},
		{"http://mirror.invalid/team/simple/", "http://mirror.invalid/team/simple/"},
		{"https://other.invalid/simple/", "https://other.invalid/simple/"},
		{"https://mirror.invalid:8443/simple/", "https://mirror.invalid:8443/simple/"},
	} {
		if got := withCredentials(tc.override, setting); got != tc.want {
			t.Errorf("withCredentials(%q) = %q, want %q", tc.override, got, tc.want)
		}
	}
	if got := withCredentials("https://mirror.invalid/x/", ""); got != "https://mirror.invalid/x/" {
		t.Errorf("no setting: %q", got)
	}
}
