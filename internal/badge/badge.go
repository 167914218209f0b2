// Package badge draws a status badge: an SVG image of coloured segments
// of text, in the shape shields.io made familiar, small enough to embed in
// a README. The text is escaped and each segment is as wide as its text
// needs (measured with a table of Verdana's widths, the font it names).
//
// It does not decide what a badge says nor who may see it (internal/api
// does) and reads nothing.
package badge

import (
	"bytes"
	"fmt"
	"html/template"
	"strings"
)

// Colours of the segments (shields.io's palette).
const (
	Green  = "#4c1"
	Yellow = "#dfb317"
	Orange = "#fe7d37"
	Red    = "#e05d44"
	Blue   = "#007ec6"
	Grey   = "#9f9f9f"
	Label  = "#555"
)

// Segment is one run of text on one colour.
type Segment struct {
	Text  string
	Color string // one of the colours above, or any "#rgb"/"#rrggbb"
}

// maxText bounds a segment's text: names and versions come from users and
// repositories, and a badge stays a badge.
const maxText = 64

// SVG renders the segments left to right. Title is the image's accessible
// name (what a screen reader says, and the tooltip).
func SVG(title string, segs ...Segment) []byte {
	type drawn struct {
		Text, Color string
		X, W, TextX int // in px; TextX is the text's centre, in tenths
		TextLen     int // in tenths of a px
	}
	var out []drawn
	x := 0
	for _, s := range segs {
		text := clip(s.Text)
		tw := Width(text)
		w := (tw+5)/10 + 10 // 5px of padding each side
		out = append(out, drawn{Text: text, Color: color(s.Color), X: x, W: w, TextX: x*10 + w*5, TextLen: tw})
		x += w
	}
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, map[string]any{"Title": clip(title), "W": x, "Segs": out}); err != nil {
		// The template is fixed and its data are strings and ints.
		panic(fmt.Sprintf("badge: %v", err))
	}
	return buf.Bytes()
}

// clip shortens text to maxText runes, marking the cut.
func clip(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	if r := []rune(s); len(r) > maxText {
		return string(r[:maxText-1]) + "…"
	}
	return s
}

// color passes a hex colour and replaces anything else with grey, so a
// caller's mistake cannot break out of the attribute.
func color(c string) string {
	h, ok := strings.CutPrefix(c, "#")
	if !ok || (len(h) != 3 && len(h) != 6) || strings.Trim(h, "0123456789abcdefABCDEF") != "" {
		return Grey
	}
	return c
}

// Width is the width of text in tenths of a pixel at Verdana 11px, from
// the widths of its characters (a wider default for characters outside
// the table: a badge a little too wide reads better than one clipped).
func Width(text string) int {
	w := 0
	for _, r := range text {
		if r < 0x7f && r >= 0x20 {
			w += asciiWidth[r-0x20]
		} else {
			w += 110
		}
	}
	return w
}

// asciiWidth is Verdana 11px's advance of each printable ASCII
// character, in tenths of a pixel (from space to "~").
var asciiWidth = [95]int{
	39, 43, 51, 92, 70, 121, 80, 30, 50, 50, 70, 92, 40, 50, 40, 50, // ' ' to '/'
	70, 70, 70, 70, 70, 70, 70, 70, 70, 70, 50, 50, 92, 92, 92, 60, // '0' to '?'
	110, 75, 76, 77, 85, 70, 63, 85, 84, 46, 50, 76, 61, 94, 83, 87, // '@' to 'O'
	66, 87, 77, 75, 68, 81, 75, 109, 75, 68, 75, 50, 50, 50, 92, 70, // 'P' to '_'
	70, 67, 69, 57, 69, 66, 39, 69, 71, 30, 38, 65, 30, 109, 71, 67, // '`' to 'o'
	69, 69, 47, 57, 43, 71, 65, 90, 65, 65, 58, 71, 50, 71, 92, // 'p' to '~'
}

// tmpl is the badge. html/template escapes every text and attribute
// value (the SVG is XML; its escaping of &, <, >, ' and " is XML's too).
var tmpl = template.Must(template.New("badge").Parse(`<svg xmlns="http://www.w3.org/2000/svg" width="{{.W}}" height="20" role="img" aria-label="{{.Title}}">` +
	`<title>{{.Title}}</title>` +
	`<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient>` +
	`<clipPath id="r"><rect width="{{.W}}" height="20" rx="3" fill="#fff"/></clipPath>` +
	`<g clip-path="url(#r)">{{range .Segs}}<rect x="{{.X}}" width="{{.W}}" height="20" fill="{{.Color}}"/>{{end}}<rect width="{{.W}}" height="20" fill="url(#s)"/></g>` +
	`<g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="110">` +
	`{{range .Segs}}<text x="{{.TextX}}" y="150" fill="#010101" fill-opacity=".3" transform="scale(.1)" textLength="{{.TextLen}}">{{.Text}}</text>` +
	`<text x="{{.TextX}}" y="140" transform="scale(.1)" fill="#fff" textLength="{{.TextLen}}">{{.Text}}</text>{{end}}` +
	`</g></svg>
`))
