package vectors

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	// Registers every xy.md.v1 message with protoregistry.GlobalTypes.
	_ "xypipe.dev/contracts/go/xy/md/v1"
)

var testdata = filepath.Join("..", "..", "..", "proto", "testdata")

type vector struct {
	Name          string `json:"name"`
	Message       string `json:"message"`
	Binary        string `json:"binary"`
	JSON          string `json:"json"`
	UnknownFields int    `json:"unknown_fields"`
}

func loadVectors(t *testing.T) []vector {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(testdata, "vectors.json"))
	if err != nil {
		t.Fatalf("reading the vector manifest: %v", err)
	}
	var manifest struct {
		Vectors []vector `json:"vectors"`
	}
	if err := json.Unmarshal(raw, &manifest); err != nil {
		t.Fatalf("parsing vectors.json: %v", err)
	}
	if len(manifest.Vectors) == 0 {
		t.Fatal("vectors.json lists no vector")
	}
	return manifest.Vectors
}

// countUnknown counts unknown field entries (one per tag) in m and every nested message.
func countUnknown(t *testing.T, m protoreflect.Message) int {
	n := 0
	for raw := m.GetUnknown(); len(raw) > 0; {
		_, _, size := protowire.ConsumeField(raw)
		if size < 0 {
			t.Fatalf("%s: malformed unknown field bytes: %v", m.Descriptor().FullName(), protowire.ParseError(size))
		}
		raw = raw[size:]
		n++
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					n += countUnknown(t, mv.Message())
					return true
				})
			}
		case fd.IsList() && fd.Message() != nil:
			for i := 0; i < v.List().Len(); i++ {
				n += countUnknown(t, v.List().Get(i).Message())
			}
		case fd.Message() != nil:
			n += countUnknown(t, v.Message())
		}
		return true
	})
	return n
}

func discardUnknown(m protoreflect.Message) {
	m.SetUnknown(nil)
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					discardUnknown(mv.Message())
					return true
				})
			}
		case fd.IsList() && fd.Message() != nil:
			for i := 0; i < v.List().Len(); i++ {
				discardUnknown(v.List().Get(i).Message())
			}
		case fd.Message() != nil:
			discardUnknown(v.Message())
		}
		return true
	})
}

func TestEveryMessageTypeHasAVector(t *testing.T) {
	covered := map[string]bool{}
	for _, v := range loadVectors(t) {
		covered[v.Message] = true
	}
	missing := 0
	protoregistry.GlobalTypes.RangeMessages(func(mt protoreflect.MessageType) bool {
		name := string(mt.Descriptor().FullName())
		if mt.Descriptor().ParentFile().Package() == "xy.md.v1" && !covered[name] {
			t.Errorf("no golden vector for %s", name)
			missing++
		}
		return true
	})
	if len(covered) < 20 {
		t.Errorf("only %d message types covered", len(covered))
	}
}

func TestGoldenVectorsDecodeMatchJSONAndReencodeIdentically(t *testing.T) {
	for _, v := range loadVectors(t) {
		v := v
		t.Run(v.Name, func(t *testing.T) {
			mt, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(v.Message))
			if err != nil {
				t.Fatalf("message type %s not in the generated Go code: %v", v.Message, err)
			}
			bin, err := os.ReadFile(filepath.Join(testdata, v.Binary))
			if err != nil {
				t.Fatal(err)
			}
			golden, err := os.ReadFile(filepath.Join(testdata, v.JSON))
			if err != nil {
				t.Fatal(err)
			}

			decoded := mt.New().Interface()
			if err := proto.Unmarshal(bin, decoded); err != nil {
				t.Fatalf("decode %s: %v", v.Binary, err)
			}
			if got := countUnknown(t, decoded.ProtoReflect()); got != v.UnknownFields {
				t.Errorf("unknown fields kept: got %d, want %d", got, v.UnknownFields)
			}

			// Re-encoding keeps unknown fields; deterministic mode sorts map keys as the
			// vectors do.
			again, err := proto.MarshalOptions{Deterministic: true}.Marshal(decoded)
			if err != nil {
				t.Fatalf("re-encode: %v", err)
			}
			if !bytes.Equal(again, bin) {
				t.Errorf("re-encoded bytes differ from %s:\n got  %x\n want %x", v.Binary, again, bin)
			}

			fromJSON := mt.New().Interface()
			if err := protojson.Unmarshal(golden, fromJSON); err != nil {
				t.Fatalf("parse %s: %v", v.JSON, err)
			}
			known := proto.Clone(decoded)
			discardUnknown(known.ProtoReflect())
			if !proto.Equal(fromJSON, known) {
				t.Errorf("%s and %s disagree:\n binary: %v\n json:   %v", v.Binary, v.JSON, known, fromJSON)
			}

			ours, err := protojson.Marshal(known)
			if err != nil {
				t.Fatal(err)
			}
			var gotJSON, wantJSON any
			if err := json.Unmarshal(ours, &gotJSON); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(golden, &wantJSON); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(gotJSON, wantJSON) {
				t.Errorf("canonical JSON differs from %s:\n got  %s\n want %s", v.JSON, ours, golden)
			}
		})
	}
}
