package registry

import (
	"errors"
	"strings"
	"testing"
)

func TestTheCheckSettingsAreValidatedPerLanguage(t *testing.T) {
	t.Parallel()
	p := Policy{}
	for _, tc := range []struct {
		b    Builder
		want string // "" = valid; else a part of the message
	}{
		{Builder{Language: LangR, Check: true}, ""},
		{Builder{Language: LangR, Check: true, CheckGates: true}, ""},
		{Builder{Language: LangPython, Check: true, CheckCommand: "python3 -m pytest -q"}, ""},
		// A command kept while the check is off is fine: turning it on needs no retyping.
		{Builder{Language: LangPython, CheckCommand: "python3 -m unittest"}, ""},
		{Builder{Language: LangR, Check: true, CheckCommand: "make test"}, "check_command applies to git-python builders only"},
		{Builder{Language: LangPython, Check: true}, "needs check_command"},
		{Builder{Language: LangR, CheckGates: true}, "check_gates needs check: true"},
		{Builder{Language: LangPython, Check: true, CheckCommand: "pytest\nrm -rf /"}, "one line"},
		{Builder{Language: LangPython, Check: true, CheckCommand: "   "}, "blank"},
		{Builder{Language: LangPython, Check: true, CheckCommand: strings.Repeat("x", 1001)}, "longer than 1000"},
	} {
		b := tc.b
		b.Source, b.Name, b.URL = "s", "x", "https://h/x"
		err := p.ValidateBuilder(&b)
		var ve *ValidationError
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("ValidateBuilder(%+v) = %v, want valid", tc.b, err)
		case tc.want != "" && (!errors.As(err, &ve) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("ValidateBuilder(%+v) = %v, want a validation error saying %q", tc.b, err, tc.want)
		}
	}
}
