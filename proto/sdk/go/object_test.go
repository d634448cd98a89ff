package operon

import (
	"encoding/json"
	"testing"
)

func TestObjectAccessorsKeepIntegers(t *testing.T) {
	o, err := parseObject([]byte(`{"metadata":{"name":"w","namespace":"ns","uid":"u1","generation":3,
		"labels":{"app":"web","n":1}},"spec":{"replicas":9007199254740993,"ratio":0.5,"on":true,
		"ports":[{"port":80}],"html":"<h1>hi</h1>"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if o.Name() != "w" || o.Namespace() != "ns" || o.UID() != "u1" || o.Generation() != 3 {
		t.Errorf("metadata accessors: %q %q %q %d", o.Name(), o.Namespace(), o.UID(), o.Generation())
	}
	if n, ok := o.Int("spec.replicas"); !ok || n != 9007199254740993 {
		t.Errorf("a big integer lost digits: %d %v", n, ok)
	}
	if _, ok := o.Int("spec.ratio"); ok {
		t.Error("0.5 is not an integer")
	}
	if f, ok := o.Float("spec.ratio"); !ok || f != 0.5 {
		t.Errorf("Float: %v %v", f, ok)
	}
	if n, ok := o.Int("spec.ports.0.port"); !ok || n != 80 {
		t.Errorf("array index: %d %v", n, ok)
	}
	if _, ok := o.Get("spec.ports.1.port"); ok {
		t.Error("out of range index found")
	}
	if !o.Bool("spec.on") || o.String("spec.html") != "<h1>hi</h1>" || o.String("spec.on") != "" {
		t.Error("Bool/String")
	}
	if got := o.Labels(); len(got) != 1 || got["app"] != "web" {
		t.Errorf("Labels keeps only strings: %v", got)
	}
	if o.Map("spec.ports") != nil || o.Map("metadata") == nil {
		t.Error("Map")
	}
	var spec struct {
		Replicas int64  `json:"replicas"`
		HTML     string `json:"html"`
	}
	if err := o.DecodeField("spec", &spec); err != nil || spec.Replicas != 9007199254740993 || spec.HTML != "<h1>hi</h1>" {
		t.Errorf("DecodeField: %+v %v", spec, err)
	}
	if err := o.DecodeField("status", &spec); err == nil {
		t.Error("DecodeField of an absent field must fail")
	}
	var all map[string]any
	if err := o.Decode(&all); err != nil || all["spec"] == nil {
		t.Errorf("Decode: %v", err)
	}
}

func TestParseObjectRefusesNonObjects(t *testing.T) {
	for _, raw := range []string{`[1]`, `"x"`, ``, `{`, `{} {}`} {
		if _, err := parseObject([]byte(raw)); err == nil {
			t.Errorf("%q parsed as an object", raw)
		}
	}
}

func TestDiff(t *testing.T) {
	d, err := parseDiff([]byte(`[["change",["spec","html"],"a","b"],["add",["metadata","labels","x"],null,"y"]]`))
	if err != nil {
		t.Fatal(err)
	}
	if len(d) != 2 || d[0].Op != "change" || d[0].Old != "a" || d[0].New != "b" || d[1].Path[2] != "x" {
		t.Fatalf("parsed: %+v", d)
	}
	for path, want := range map[string]bool{
		"spec.html": true, "spec": true, "spec.html.deeper": true, "spec.replicas": false,
		"metadata.labels": true, "status": false,
	} {
		if got := d.Changed(path); got != want {
			t.Errorf("Changed(%q) = %v", path, got)
		}
	}
	if d, err := parseDiff(nil); err != nil || d != nil {
		t.Errorf("an empty diff: %v %v", d, err)
	}
	for _, bad := range []string{`{}`, `[["change"]]`, `[[1,[],0,0]]`} {
		if _, err := parseDiff([]byte(bad)); err == nil {
			t.Errorf("%s parsed as a diff", bad)
		}
	}
}

func TestMergePatchComposes(t *testing.T) {
	p := mergePatch(nil, map[string]any{"metadata": map[string]any{"labels": map[string]any{"a": "1"}}})
	p = mergePatch(p, map[string]any{"metadata": map[string]any{"labels": map[string]any{"b": "2"}},
		"spec": map[string]any{"x": nil}})
	p = mergePatch(p, map[string]any{"status": "replaced"})
	raw, _ := marshalJSON(p)
	want := `{"metadata":{"labels":{"a":"1","b":"2"}},"spec":{"x":null},"status":"replaced"}`
	if string(raw) != want {
		t.Errorf("merged %s, want %s", raw, want)
	}
	// The caller's maps are not aliased.
	mine := map[string]any{"k": "v"}
	p = mergePatch(nil, map[string]any{"m": mine})
	mine["k"] = "changed"
	if p["m"].(map[string]any)["k"] != "v" {
		t.Error("the patch aliases the caller's map")
	}
}

func TestMarshalKeepsHTML(t *testing.T) {
	raw, err := marshalJSON(map[string]any{"html": "<p>&</p>", "n": json.Number("12")})
	if err != nil || string(raw) != `{"html":"<p>&</p>","n":12}` {
		t.Errorf("%s %v", raw, err)
	}
}
