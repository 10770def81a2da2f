package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestWorkIsDeterministic(t *testing.T) {
	if spin(10) != spin(10) {
		t.Fatal("spin(10) differs between calls")
	}
	if spin(10) == spin(11) {
		t.Fatal("spin(10) equals spin(11)")
	}
}

func TestWorkRejectsBadInput(t *testing.T) {
	for _, q := range []string{"-1", "abc", "1000001"} {
		rec := httptest.NewRecorder()
		handleWork(rec, httptest.NewRequest(http.MethodGet, "/work?work="+q, nil))
		if rec.Code != http.StatusBadRequest {
			t.Errorf("work=%s: got status %d, want 400", q, rec.Code)
		}
	}
	rec := httptest.NewRecorder()
	handleWork(rec, httptest.NewRequest(http.MethodGet, "/work?work=5", nil))
	if rec.Code != http.StatusOK || len(rec.Body.String()) != 65 {
		t.Errorf("work=5: got %d %q", rec.Code, rec.Body.String())
	}
}
