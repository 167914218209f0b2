package pipeline

import (
	"sync"

	"github.com/pkgfleet/pkgfleet/internal/recipe"
)

// Language is how a worker builds one language: the recipe, and the
// isolation each build of it records.
type Language struct {
	Recipe recipe.Recipe
	// Sandbox is the runner's Mode: "user-namespace" or "unsandboxed".
	Sandbox string
	// Tier is the sandbox tier the runner set up ("full", "masked-proc"),
	// or "unsandboxed" for a build without the sandbox.
	Tier string
}

// Languages is the set of languages a worker builds now. The worker
// changes it while builds run (a language whose re-probe passed comes
// back), so it is safe for concurrent use; the zero value is empty.
type Languages struct {
	mu sync.RWMutex
	m  map[string]Language
}

// NewLanguages returns a set holding m.
func NewLanguages(m map[string]Language) *Languages {
	l := &Languages{}
	for k, v := range m {
		l.Set(k, v)
	}
	return l
}

// Set makes lang buildable with l, or replaces how it is built.
func (s *Languages) Set(lang string, l Language) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]Language{}
	}
	s.m[lang] = l
}

// Get returns how lang is built, if it is.
func (s *Languages) Get(lang string) (Language, bool) {
	if s == nil {
		return Language{}, false
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	l, ok := s.m[lang]
	return l, ok
}
