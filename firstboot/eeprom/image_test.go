package eeprom

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// Every shipped config reads back byte for byte, and writing it back gives
// the identical image.
func TestShippedConfigsRoundTrip(t *testing.T) {
	t.Parallel()
	dir := realData(t)
	pairs := 0
	for _, path := range imageNames(t, dir) {
		im, orig := parseFile(t, path)
		cfgPath := filepath.Join(dir, "configs", "bootconf-"+imageDate(path)+".txt")
		want, err := os.ReadFile(cfgPath)
		if errors.Is(err, os.ErrNotExist) {
			// No shipped copy: the image's own config must still round-trip.
			want = im.Config()
		} else if err != nil {
			t.Fatal(err)
		} else {
			pairs++
		}
		if got := im.Config(); !bytes.Equal(got, want) {
			t.Errorf("%s: Config() = %q, want %q", filepath.Base(path), got, want)
			continue
		}
		if err := im.SetConfig(want); err != nil {
			t.Errorf("%s: SetConfig(shipped config): %v", filepath.Base(path), err)
			continue
		}
		if !bytes.Equal(im.Bytes(), orig) {
			t.Errorf("%s: writing the shipped config back changed the image", filepath.Base(path))
		}
	}
	if pairs < 73 {
		t.Errorf("checked %d image/config pairs, the test data has 73", pairs)
	}
}

// The reference file holds the sha256 of what rpi-eeprom-config itself wrote
// for each image and config (gen-reference.sh); nixpi must write the same.
func TestMatchesRpiEepromConfig(t *testing.T) {
	t.Parallel()
	dir := realData(t)
	ours := ourData(t)
	configs := map[string][]byte{
		"boot-order": readFile(t, filepath.Join(ours, "bootconf-boot-order.txt")),
		"4076":       readFile(t, filepath.Join(dir, "bootconf-4076.txt")),
		"empty":      {},
		"signed":     readFile(t, filepath.Join(dir, "signed", "bootconf.txt")),
	}
	sig := readFile(t, filepath.Join(dir, "signed", "bootconf.sig"))
	pub := readFile(t, filepath.Join(dir, "signed", "public.pem"))

	f, err := os.Open(filepath.Join(ours, "reference.sha256"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 3 {
			t.Fatalf("bad reference line %q", sc.Text())
		}
		want, image, kase := fields[0], fields[1], fields[2]
		im, _ := parseFile(t, filepath.Join(dir, image))
		if err := im.SetConfig(configs[kase]); err != nil {
			t.Errorf("%s %s: SetConfig: %v", image, kase, err)
			continue
		}
		if kase == "signed" {
			if err := im.SetSignature(sig, pub); err != nil {
				t.Errorf("%s: SetSignature: %v", image, err)
				continue
			}
		}
		sum := sha256.Sum256(im.Bytes())
		if got := hex.EncodeToString(sum[:]); got != want {
			t.Errorf("%s with %s config: sha256 %s, rpi-eeprom-config wrote %s", image, kase, got, want)
		}
		seen[image] = true
		n++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(seen) < 77 || n < 250 {
		t.Errorf("reference covered %d images in %d cases, want all 77 images", len(seen), n)
	}
}

// The freeze image in the test data is images/pieeprom-2019-07-15.bin with
// the freeze config applied; the 1008-byte config takes it back.
func TestFreezeImage(t *testing.T) {
	t.Parallel()
	dir := realData(t)
	im, orig := parseFile(t, filepath.Join(dir, "images", "pieeprom-2019-07-15.bin"))
	freezeCfg := readFile(t, filepath.Join(dir, "bootconf-2019-07-15-freeze.txt"))
	wantFreeze := readFile(t, filepath.Join(dir, "pieeprom-2019-07-15-freeze.bin"))
	if err := im.SetConfig(freezeCfg); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(im.Bytes(), wantFreeze) {
		t.Fatal("applying the freeze config did not give pieeprom-2019-07-15-freeze.bin")
	}
	frozen, _ := parseFile(t, filepath.Join(dir, "pieeprom-2019-07-15-freeze.bin"))
	if err := frozen.SetConfig(readFile(t, filepath.Join(dir, "bootconf-2019-07-15.txt"))); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(frozen.Bytes(), orig) {
		t.Fatal("applying bootconf-2019-07-15.txt to the freeze image did not give the original back")
	}
}

// The signed test image: its files read back as shipped, and writing config,
// signature and key back (after changing them) restores it exactly.
func TestSignedImageRoundTrip(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(realData(t), "signed")
	im, orig := parseFile(t, filepath.Join(dir, "pieeprom-signed.bin"))
	cfg := readFile(t, filepath.Join(dir, "bootconf.txt"))
	sig := readFile(t, filepath.Join(dir, "bootconf.sig"))
	pub := readFile(t, filepath.Join(dir, "public.pem"))
	key, err := PublicKeyBin(pub)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][]byte{BootconfTxt: cfg, BootconfSig: sig, PubkeyBin: key} {
		got, err := im.File(name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s in the signed image differs from the shipped one", name)
		}
	}

	if err := im.SetConfig([]byte("[all]\nBOOT_ORDER=0xf14\n")); err != nil {
		t.Fatal(err)
	}
	if err := im.SetFile(BootconfSig, []byte("short")); err != nil {
		t.Fatal(err)
	}
	if err := im.SetFile(PubkeyBin, make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(im.Bytes(), orig) {
		t.Fatal("changing the signed files left the image unchanged")
	}
	if err := im.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if err := im.SetSignature(sig, pub); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(im.Bytes(), orig) {
		t.Fatal("writing the signed config, .sig and key back did not restore the image")
	}
}

// SetSignature changes nothing when the key is unusable or the image has no
// signature sections.
func TestSetSignatureAllOrNothing(t *testing.T) {
	t.Parallel()
	dir := realData(t)
	pub := readFile(t, filepath.Join(dir, "signed", "public.pem"))
	sig := readFile(t, filepath.Join(dir, "signed", "bootconf.sig"))

	im, orig := parseFile(t, filepath.Join(dir, "signed", "pieeprom-signed.bin"))
	if err := im.SetSignature(sig, []byte("not a key")); err == nil {
		t.Fatal("SetSignature accepted a file that is no PEM key")
	}
	if err := im.SetSignature(bytes.Repeat([]byte("x"), MaxFileSize+1), pub); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("SetSignature with an oversized .sig: err = %v, want ErrTooLarge", err)
	}
	if !bytes.Equal(im.Bytes(), orig) {
		t.Fatal("a failed SetSignature changed the image")
	}

	old, oldOrig := parseFile(t, filepath.Join(dir, "images", "pieeprom-2020-09-03.bin"))
	if err := old.SetSignature(sig, pub); err == nil || !strings.Contains(err.Error(), "no bootconf.sig") {
		t.Fatalf("SetSignature on an image without bootconf.sig: err = %v", err)
	}
	if !bytes.Equal(old.Bytes(), oldOrig) {
		t.Fatal("a failed SetSignature changed the image")
	}
}

// The 4076-byte config fits in every image and reads back; 4077 bytes are
// refused and leave the image as it was. Replacing a config with the largest
// one and then the original gives the original image back: the bytes the
// larger one used are erased again.
func TestSizeLimitsAndShrink(t *testing.T) {
	t.Parallel()
	dir := realData(t)
	max := readFile(t, filepath.Join(dir, "bootconf-4076.txt"))
	over := readFile(t, filepath.Join(dir, "bootconf-4077.txt"))
	if len(max) != MaxFileSize || len(over) != MaxFileSize+1 {
		t.Fatalf("limit files are %d and %d bytes", len(max), len(over))
	}
	for _, path := range imageNames(t, dir) {
		im, orig := parseFile(t, path)
		name := filepath.Base(path)
		shipped := im.Config()
		if err := im.SetConfig(over); !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s: 4077-byte config: err = %v, want ErrTooLarge", name, err)
		}
		if !bytes.Equal(im.Bytes(), orig) {
			t.Errorf("%s: refused config changed the image", name)
		}
		if err := im.SetConfig(max); err != nil {
			t.Errorf("%s: 4076-byte config: %v", name, err)
			continue
		}
		back, err := Parse(im.Bytes())
		if err != nil {
			t.Errorf("%s: image with 4076-byte config does not parse: %v", name, err)
			continue
		}
		if !bytes.Equal(back.Config(), max) {
			t.Errorf("%s: 4076-byte config did not read back", name)
		}
		if err := back.SetConfig(shipped); err != nil {
			t.Errorf("%s: restoring shipped config: %v", name, err)
			continue
		}
		if !bytes.Equal(back.Bytes(), orig) {
			t.Errorf("%s: larger config then the original did not give the original image", name)
		}
	}
}

// After any edit the section table the Image keeps equals a fresh parse of its
// bytes, and only the edited file's region changed.
func TestEditKeepsChainConsistent(t *testing.T) {
	t.Parallel()
	dir := realData(t)
	for _, path := range []string{
		filepath.Join(dir, "images", "pieeprom-2019-07-15.bin"),
		filepath.Join(dir, "images", "pieeprom-2022-11-25.bin"),
		filepath.Join(dir, "images", "pieeprom-2026-08-04.bin"),
		filepath.Join(dir, "signed", "pieeprom-signed.bin"),
	} {
		im, orig := parseFile(t, path)
		if err := im.SetConfig([]byte("[all]\nBOOT_ORDER=0xf41\n")); err != nil {
			t.Fatal(err)
		}
		for _, sec := range im.Sections() {
			if sec.Name == BootconfSig {
				if err := im.SetFile(BootconfSig, []byte("x")); err != nil {
					t.Fatal(err)
				}
			}
		}
		fresh, err := parseChain(im.Bytes())
		if err != nil {
			t.Fatalf("%s: edited image does not parse: %v", filepath.Base(path), err)
		}
		if !reflect.DeepEqual(fresh, im.Sections()) {
			t.Errorf("%s: kept sections\n%v\nfresh parse\n%v", filepath.Base(path), im.Sections(), fresh)
		}
		if tail := orig[ImageSize-eraseSector:]; !bytes.Equal(im.Bytes()[ImageSize-eraseSector:], tail) {
			t.Errorf("%s: the reserved last 4 KiB changed", filepath.Base(path))
		}
		if n := bytes.Index(orig, []byte{0x55, 0xaa, 0xf0, 0x0f}); n != 0 {
			t.Fatalf("bootcode magic at %d", n)
		}
		bootcodeEnd := 8 + int(binary.BigEndian.Uint32(orig[4:]))
		if !bytes.Equal(im.Bytes()[:bootcodeEnd], orig[:bootcodeEnd]) {
			t.Errorf("%s: the bootcode changed", filepath.Base(path))
		}
	}
}

func TestParseRejects(t *testing.T) {
	t.Parallel()
	dir := realData(t)
	good := readFile(t, filepath.Join(dir, "images", "pieeprom-2022-11-25.bin"))
	im, _ := parseFile(t, filepath.Join(dir, "images", "pieeprom-2022-11-25.bin"))
	var conf Section
	for _, s := range im.Sections() {
		if s.Name == BootconfTxt {
			conf = s
		}
	}
	mutate := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "exactly 524288"},
		{"short", good[:ImageSize-1], "exactly 524288"},
		{"pi5", make([]byte, 2*1024*1024), "Raspberry Pi 5"},
		{"bad magic", mutate(func(b []byte) []byte { b[conf.Offset] = 0x12; return b }), "bad magic"},
		{"no bootconf", mutate(func(b []byte) []byte { copy(b[conf.Offset+8:], "bootconf.xxx"); return b }), "no bootconf.txt"},
		{"overrun", mutate(func(b []byte) []byte { binary.BigEndian.PutUint32(b[conf.Offset+4:], ImageSize); return b }), "runs past the end"},
		{"huge length", mutate(func(b []byte) []byte { binary.BigEndian.PutUint32(b[conf.Offset+4:], 0xfffffff8); return b }), "runs past the end"},
		{"file too short", mutate(func(b []byte) []byte { binary.BigEndian.PutUint32(b[conf.Offset+4:], 3); return b }), "shorter than its name"},
		{"erased", bytes.Repeat([]byte{0xff}, ImageSize), "no bootconf.txt"},
	}
	for _, c := range cases {
		_, err := Parse(c.data)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Parse error = %v, want one containing %q", c.name, err, c.want)
		}
	}
	if _, err := Parse(make([]byte, 2*1024*1024)); !errors.Is(err, ErrNotSupported) {
		t.Errorf("Pi 5 image: err = %v, want ErrNotSupported", err)
	}
}

func TestBuildTimestamp(t *testing.T) {
	t.Parallel()
	dir := realData(t)
	im, _ := parseFile(t, filepath.Join(dir, "images", "pieeprom-2020-09-03.bin"))
	if ts, ok := im.BuildTimestamp(); !ok || ts != 1599135103 {
		t.Fatalf("BuildTimestamp = %d, %v; the image says BUILD_TIMESTAMP=1599135103", ts, ok)
	}
	prev := int64(0)
	for _, path := range imageNames(t, dir) {
		im, _ := parseFile(t, path)
		ts, ok := im.BuildTimestamp()
		if !ok || ts < prev {
			t.Errorf("%s: build timestamp %d (ok %v) not after the previous release's %d", filepath.Base(path), ts, ok, prev)
		}
		prev = ts
	}
}

func TestDigest(t *testing.T) {
	t.Parallel()
	got := string(Digest([]byte("abc"), 1614092425))
	want := "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\nts: 1614092425\n"
	if got != want {
		t.Fatalf("Digest = %q, want %q", got, want)
	}
}

func TestPublicKeyBinRejects(t *testing.T) {
	t.Parallel()
	for name, pem := range map[string]string{
		"not pem": "hello",
		"private": "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
		"cert":    "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
		"garbage": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
	} {
		if _, err := PublicKeyBin([]byte(pem)); err == nil {
			t.Errorf("%s: PublicKeyBin accepted it", name)
		}
	}
}

// The PKCS#1 form of the signed test key converts to the same pubkey.bin as
// its PKIX form (which the signed image carries); other sizes are refused.
func TestPublicKeyBinForms(t *testing.T) {
	t.Parallel()
	pkix := readFile(t, filepath.Join(realData(t), "signed", "public.pem"))
	want, err := PublicKeyBin(pkix)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(pkix)
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(k.(*rsa.PublicKey))})
	got, err := PublicKeyBin(pkcs1)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("PKCS#1 form: %x, %v", got, err)
	}
	if len(want) != 264 || want[256] != 1 || want[257] != 0 || want[258] != 1 { // e = 65537, little-endian
		t.Fatalf("pubkey.bin layout: %d bytes, exponent bytes %x", len(want), want[256:])
	}

	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&small.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := PublicKeyBin(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})); err == nil || !strings.Contains(err.Error(), "RSA-1024") {
		t.Fatalf("1024-bit key: err = %v", err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err = x509.MarshalPKIXPublicKey(&ec.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := PublicKeyBin(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})); err == nil || !strings.Contains(err.Error(), "RSA-2048") {
		t.Fatalf("ECDSA key: err = %v", err)
	}
}

// rpi-eeprom-config accepts a file up to 4 bytes longer than its section has
// room for and then writes over the next section's header, breaking the
// chain (checked with their tool: a 4073-byte .sig in this image). nixpi
// accepts exactly what fits.
func TestSetFileStopsBeforeNextHeader(t *testing.T) {
	t.Parallel()
	im, orig := parseFile(t, filepath.Join(realData(t), "images", "pieeprom-2022-11-25.bin"))
	if err := im.SetFile(BootconfSig, bytes.Repeat([]byte("s"), 4073)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("4073-byte .sig: err = %v, want ErrTooLarge", err)
	}
	if !bytes.Equal(im.Bytes(), orig) {
		t.Fatal("refused .sig changed the image")
	}
	if err := im.SetFile(BootconfSig, bytes.Repeat([]byte("s"), 4072)); err != nil {
		t.Fatalf("4072-byte .sig: %v", err)
	}
	back, err := Parse(im.Bytes())
	if err != nil {
		t.Fatalf("image with a 4072-byte .sig does not parse: %v", err)
	}
	if !bytes.Equal(back.Config(), im.Config()) {
		t.Fatal("config changed")
	}
}
