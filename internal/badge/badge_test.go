package badge

import (
	"encoding/xml"
	"strconv"
	"strings"
	"testing"
)

// parse reads an SVG as XML and returns the texts of its <text> elements
// and its width attribute.
func parse(t *testing.T, svg []byte) (texts []string, width string) {
	t.Helper()
	dec := xml.NewDecoder(strings.NewReader(string(svg)))
	var in bool
	for {
		tok, err := dec.Token()
		if err != nil {
			if err.Error() == "EOF" {
				return texts, width
			}
			t.Fatalf("the badge is not well-formed XML: %v\n%s", err, svg)
		}
		switch e := tok.(type) {
		case xml.StartElement:
			if e.Name.Local == "svg" {
				for _, a := range e.Attr {
					if a.Name.Local == "width" {
						width = a.Value
					}
				}
			}
			in = e.Name.Local == "text"
		case xml.CharData:
			if in {
				texts = append(texts, string(e))
			}
		case xml.EndElement:
			in = false
		}
	}
}

func TestHostileTextIsEscapedAndTheBadgeStaysWellFormedXML(t *testing.T) {
	t.Parallel()
	hostile := `</text><script>alert(1)</script>&amp;"'<`
	svg := SVG(hostile, Segment{hostile, Label}, Segment{"1.0 & <b>", `red" onload="x`})
	if strings.Contains(string(svg), "<script") || strings.Contains(string(svg), "onload") {
		t.Fatalf("hostile text reached the SVG unescaped:\n%s", svg)
	}
	texts, _ := parse(t, svg)
	if len(texts) != 4 || texts[0] != hostile || texts[2] != "1.0 & <b>" {
		t.Fatalf("texts = %q, want the hostile text back as text", texts)
	}
	if !strings.Contains(string(svg), `fill="`+Grey+`"`) {
		t.Errorf("a colour that is not hex was not replaced by grey:\n%s", svg)
	}
}

func TestWidthFollowsTheText(t *testing.T) {
	t.Parallel()
	_, short := parse(t, SVG("x", Segment{"pkg", Label}, Segment{"1.0", Green}))
	_, long := parse(t, SVG("x", Segment{"a-much-longer-package-name", Label}, Segment{"1.0.0.9000 failed", Red}))
	if a, _ := strconv.Atoi(short); a == 0 || atoi(long) <= a {
		t.Errorf("width %s for short texts, %s for long ones: not wider", short, long)
	}
	if Width("WWW") <= Width("iii") {
		t.Errorf("Width(WWW) = %d <= Width(iii) = %d", Width("WWW"), Width("iii"))
	}
	texts, _ := parse(t, SVG("x", Segment{strings.Repeat("x", 500), Label}))
	if n := len([]rune(texts[0])); n != maxText {
		t.Errorf("a 500-character text is drawn with %d characters, want %d", n, maxText)
	}
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }
