// helmrender renders a Helm chart the way `helm template` does, for tests on machines without a
// helm binary: the same template engine (Go text/template), the same function library (sprig,
// without env/expandenv as in Helm) and Helm's own additions that charts rely on (include, tpl,
// required, toYaml, fromYaml, toJson, fromJson), the same built-in objects (.Values, .Release,
// .Chart, .Capabilities, .Template) and the same value handling (values.yaml, then -f files, then
// --set, merged map by map; YAML read through sigs.k8s.io/yaml like Helm, so numbers are float64).
//
// Not covered: subcharts, .Files, lookup (always empty in `helm template` anyway), --set list
// syntax (a[0]=x, {a,b}), values.schema.json.
//
// Usage:
//
//	helmrender --chart DIR [--release NAME] [--namespace NS] [-f values.yaml]... [--set a.b=c]...
//	           [--include-crds] [--api-versions group/version]... [--kube-version 1.30.0] [--notes]
//
// Output: the rendered manifests as one YAML stream, each document preceded by
// "# Source: <chart>/templates/<file>" like helm; with --notes only the rendered NOTES.txt.
package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	"sigs.k8s.io/yaml"
)

// Chart is the subset of Chart.yaml exposed as .Chart (field names as in Helm's chart.Metadata).
type Chart struct {
	APIVersion  string   `json:"apiVersion"`
	Name        string   `json:"name"`
	Version     string   `json:"version"`
	AppVersion  string   `json:"appVersion"`
	Description string   `json:"description"`
	Type        string   `json:"type"`
	KubeVersion string   `json:"kubeVersion"`
	Home        string   `json:"home"`
	Keywords    []string `json:"keywords"`
	Sources     []string `json:"sources"`
}

// Release is .Release as `helm template` (an install) sets it.
type Release struct {
	Name      string
	Namespace string
	Service   string
	Revision  int
	IsInstall bool
	IsUpgrade bool
}

// VersionSet is .Capabilities.APIVersions.
type VersionSet []string

// Has reports whether the cluster serves a group/version (or group/version/Kind).
func (v VersionSet) Has(apiVersion string) bool {
	for _, x := range v {
		if x == apiVersion {
			return true
		}
	}
	return false
}

// KubeVersion is .Capabilities.KubeVersion.
type KubeVersion struct {
	Version string
	Major   string
	Minor   string
}

// Capabilities is .Capabilities.
type Capabilities struct {
	APIVersions VersionSet
	KubeVersion KubeVersion
}

// TemplateInfo is .Template.
type TemplateInfo struct {
	Name     string
	BasePath string
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

type options struct {
	chartDir    string
	release     string
	namespace   string
	valueFiles  stringList
	sets        stringList
	apiVersions stringList
	kubeVersion string
	includeCRDs bool
	notes       bool
}

func parseArgs(args []string) (options, error) {
	o := options{release: "release-name", namespace: "default", kubeVersion: "1.30.0"}
	for i := 0; i < len(args); i++ {
		a := args[i]
		takes := func() (string, error) {
			if i+1 >= len(args) {
				return "", fmt.Errorf("flag %s needs a value", a)
			}
			i++
			return args[i], nil
		}
		var err error
		var v string
		switch a {
		case "--chart":
			o.chartDir, err = takes()
		case "--release":
			o.release, err = takes()
		case "--namespace", "-n":
			o.namespace, err = takes()
		case "-f", "--values":
			v, err = takes()
			o.valueFiles = append(o.valueFiles, v)
		case "--set":
			v, err = takes()
			o.sets = append(o.sets, v)
		case "--api-versions":
			v, err = takes()
			o.apiVersions = append(o.apiVersions, v)
		case "--kube-version":
			o.kubeVersion, err = takes()
		case "--include-crds":
			o.includeCRDs = true
		case "--notes":
			o.notes = true
		default:
			err = fmt.Errorf("unknown argument %q", a)
		}
		if err != nil {
			return o, err
		}
	}
	if o.chartDir == "" {
		return o, errors.New("--chart DIR is required")
	}
	return o, nil
}

// readYAMLMap reads a YAML mapping the way Helm reads values (through JSON: numbers are float64).
func readYAMLMap(file string) (map[string]interface{}, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	m := map[string]interface{}{}
	if err := yaml.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%s: %v", file, err)
	}
	if m == nil {
		m = map[string]interface{}{}
	}
	return m, nil
}

// coalesce merges src over dst as Helm merges user values over a chart's defaults: mappings merge
// key by key, anything else replaces, and null deletes the key.
func coalesce(dst, src map[string]interface{}) map[string]interface{} {
	for k, sv := range src {
		if sv == nil {
			delete(dst, k)
			continue
		}
		sm, sIsMap := sv.(map[string]interface{})
		dm, dIsMap := dst[k].(map[string]interface{})
		if sIsMap && dIsMap {
			dst[k] = coalesce(dm, sm)
		} else {
			dst[k] = sv
		}
	}
	return dst
}

// splitKey splits "a.b\.c" into ["a", "b.c"].
func splitKey(key string) []string {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(key); i++ {
		if key[i] == '\\' && i+1 < len(key) && key[i+1] == '.' {
			cur.WriteByte('.')
			i++
		} else if key[i] == '.' {
			parts = append(parts, cur.String())
			cur.Reset()
		} else {
			cur.WriteByte(key[i])
		}
	}
	return append(parts, cur.String())
}

// typed converts a --set value as Helm's strvals does: booleans, null, integers, else a string.
func typed(v string) interface{} {
	switch strings.ToLower(v) {
	case "true":
		return true
	case "false":
		return false
	case "null":
		return nil
	}
	if !strings.HasPrefix(v, "0") { // "0123" (and "0") stay strings, as in Helm
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			return n
		}
	}
	return v
}

func applySet(values map[string]interface{}, expr string) error {
	eq := strings.Index(expr, "=")
	if eq <= 0 {
		return fmt.Errorf("--set %q: expected key=value", expr)
	}
	keys := splitKey(expr[:eq])
	m := values
	for _, k := range keys[:len(keys)-1] {
		next, ok := m[k].(map[string]interface{})
		if !ok {
			next = map[string]interface{}{}
			m[k] = next
		}
		m = next
	}
	last := keys[len(keys)-1]
	if v := typed(expr[eq+1:]); v == nil {
		delete(m, last)
	} else {
		m[last] = v
	}
	return nil
}

func toYAML(v interface{}) string {
	data, err := yaml.Marshal(v)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(data), "\n")
}

func fromYAML(s string) map[string]interface{} {
	m := map[string]interface{}{}
	if err := yaml.Unmarshal([]byte(s), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

func required(warn string, val interface{}) (interface{}, error) {
	if val == nil {
		return val, errors.New(warn)
	}
	if s, ok := val.(string); ok && s == "" {
		return val, errors.New(warn)
	}
	return val, nil
}

// engine holds one chart's templates, parsed together so that they can include each other.
type engine struct {
	root *template.Template
}

func newEngine(files map[string]string) (*engine, error) {
	e := &engine{}
	funcs := sprig.TxtFuncMap()
	delete(funcs, "env") // Helm removes these: a chart must not read the renderer's environment
	delete(funcs, "expandenv")
	funcs["toYaml"] = toYAML
	funcs["fromYaml"] = fromYAML
	funcs["required"] = required
	funcs["include"] = func(name string, data interface{}) (string, error) {
		var buf bytes.Buffer
		if err := e.root.ExecuteTemplate(&buf, name, data); err != nil {
			return "", err
		}
		return buf.String(), nil
	}
	funcs["tpl"] = func(text string, data interface{}) (string, error) {
		t, err := e.root.Clone()
		if err != nil {
			return "", err
		}
		t, err = t.New("tpl").Parse(text)
		if err != nil {
			return "", fmt.Errorf("tpl: %v", err)
		}
		var buf bytes.Buffer
		if err := t.Execute(&buf, data); err != nil {
			return "", fmt.Errorf("tpl: %v", err)
		}
		return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
	}
	funcs["lookup"] = func(string, string, string, string) (map[string]interface{}, error) {
		return map[string]interface{}{}, nil
	}
	e.root = template.New("gotpl").Option("missingkey=zero").Funcs(funcs)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if _, err := e.root.New(n).Parse(files[n]); err != nil {
			return nil, err
		}
	}
	return e, nil
}

func (e *engine) render(name string, top map[string]interface{}) (string, error) {
	var buf bytes.Buffer
	if err := e.root.ExecuteTemplate(&buf, name, top); err != nil {
		return "", err
	}
	// Helm prints a missing value as nothing rather than "<no value>".
	return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
}

func run(o options) error {
	chartData, err := os.ReadFile(filepath.Join(o.chartDir, "Chart.yaml"))
	if err != nil {
		return err
	}
	var chart Chart
	if err := yaml.Unmarshal(chartData, &chart); err != nil {
		return fmt.Errorf("Chart.yaml: %v", err)
	}
	if chart.APIVersion != "v2" || chart.Name == "" || chart.Version == "" {
		return errors.New("Chart.yaml: needs apiVersion v2, name and version")
	}
	values, err := readYAMLMap(filepath.Join(o.chartDir, "values.yaml"))
	if err != nil {
		return err
	}
	for _, f := range o.valueFiles {
		user, err := readYAMLMap(f)
		if err != nil {
			return err
		}
		values = coalesce(values, user)
	}
	for _, s := range o.sets {
		if err := applySet(values, s); err != nil {
			return err
		}
	}

	templateDir := filepath.Join(o.chartDir, "templates")
	entries, err := os.ReadDir(templateDir)
	if err != nil {
		return err
	}
	files := map[string]string{}
	for _, ent := range entries {
		if ent.IsDir() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(templateDir, ent.Name()))
		if err != nil {
			return err
		}
		files[path.Join(chart.Name, "templates", ent.Name())] = string(data)
	}
	e, err := newEngine(files)
	if err != nil {
		return err
	}

	kv := strings.SplitN(strings.TrimPrefix(o.kubeVersion, "v"), ".", 3)
	if len(kv) < 2 {
		return fmt.Errorf("--kube-version %q: expected MAJOR.MINOR[.PATCH]", o.kubeVersion)
	}
	apiVersions := append(VersionSet{"v1", "apps/v1", "rbac.authorization.k8s.io/v1",
		"apiextensions.k8s.io/v1", "policy/v1"}, o.apiVersions...)
	top := map[string]interface{}{
		"Values":  values,
		"Release": Release{Name: o.release, Namespace: o.namespace, Service: "Helm", Revision: 1, IsInstall: true},
		"Chart":   chart,
		"Capabilities": Capabilities{APIVersions: apiVersions,
			KubeVersion: KubeVersion{Version: "v" + strings.TrimPrefix(o.kubeVersion, "v"), Major: kv[0], Minor: kv[1]}},
	}

	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var out strings.Builder
	if o.includeCRDs && !o.notes {
		crdFiles, _ := filepath.Glob(filepath.Join(o.chartDir, "crds", "*.yaml"))
		sort.Strings(crdFiles)
		for _, f := range crdFiles {
			data, err := os.ReadFile(f)
			if err != nil {
				return err
			}
			fmt.Fprintf(&out, "---\n# Source: %s/crds/%s\n%s", chart.Name, filepath.Base(f), data)
			if !bytes.HasSuffix(data, []byte("\n")) {
				out.WriteString("\n")
			}
		}
	}
	for _, n := range names {
		base := path.Base(n)
		isNotes := base == "NOTES.txt"
		if strings.HasPrefix(base, "_") || isNotes != o.notes {
			continue // partials are only included; NOTES.txt is not a manifest
		}
		top["Template"] = TemplateInfo{Name: n, BasePath: path.Join(chart.Name, "templates")}
		text, err := e.render(n, top)
		if err != nil {
			return err
		}
		if o.notes {
			out.WriteString(text)
			continue
		}
		for _, doc := range splitDocuments(text) {
			fmt.Fprintf(&out, "---\n# Source: %s\n%s\n", n, doc)
		}
	}
	_, err = os.Stdout.WriteString(out.String())
	return err
}

// splitDocuments splits a rendered file at "---" lines and drops documents with nothing but
// whitespace and comments, as Helm does.
func splitDocuments(text string) []string {
	var docs []string
	var cur []string
	flush := func() {
		doc := strings.Trim(strings.Join(cur, "\n"), "\n")
		for _, line := range strings.Split(doc, "\n") {
			t := strings.TrimSpace(line)
			if t != "" && !strings.HasPrefix(t, "#") {
				docs = append(docs, doc)
				break
			}
		}
		cur = nil
	}
	for _, line := range strings.Split(text, "\n") {
		if strings.TrimRight(line, " \t") == "---" {
			flush()
			continue
		}
		cur = append(cur, line)
	}
	flush()
	return docs
}

func main() {
	o, err := parseArgs(os.Args[1:])
	if err == nil {
		err = run(o)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "Error: %v\n", err)
		os.Exit(1)
	}
}
