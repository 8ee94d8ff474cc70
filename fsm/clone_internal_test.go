package fsm

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/switchyard/switchyard/fsm/fsmpb"
)

// Every field of Allocation, set to a non-zero value, survives
// cloneAllocation; a field added to the message and not copied fails here.
func TestCloneAllocationIsComplete(t *testing.T) {
	a := &fsmpb.Allocation{}
	m := a.ProtoReflect()
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if fd.IsList() || fd.IsMap() || fd.Message() != nil {
			t.Fatalf("field %s is not a scalar: cloneAllocation copies scalars only", fd.Name())
		}
		var v protoreflect.Value
		switch fd.Kind() {
		case protoreflect.StringKind:
			v = protoreflect.ValueOfString("x" + string(fd.Name()))
		case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
			v = protoreflect.ValueOfInt64(int64(i + 1))
		case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
			v = protoreflect.ValueOfInt32(int32(i + 1))
		case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
			v = protoreflect.ValueOfUint64(uint64(i + 1))
		case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
			v = protoreflect.ValueOfUint32(uint32(i + 1))
		case protoreflect.BoolKind:
			v = protoreflect.ValueOfBool(true)
		case protoreflect.EnumKind:
			v = protoreflect.ValueOfEnum(1)
		default:
			t.Fatalf("field %s: kind %v not covered by this test", fd.Name(), fd.Kind())
		}
		m.Set(fd, v)
	}
	if c := cloneAllocation(a); !proto.Equal(c, a) {
		t.Fatalf("clone %v differs from %v", c, a)
	}
}
