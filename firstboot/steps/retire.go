package steps

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nixpi/nixpi/firstboot/cardpath"
	"github.com/nixpi/nixpi/firstboot/eeprom"
	"github.com/nixpi/nixpi/firstboot/engine"
	"github.com/nixpi/nixpi/firstboot/retire"
)

type retireStep struct{}

// NewRetire moves the card's boot files into nixpi/retired/ when the boot
// order tries the SD card before USB: the bootloader boots the card as long
// as it has a start*.elf, so the SSD would never get its turn. With USB
// first (0xf14) the card stays as it is, a fallback when the SSD fails.
func NewRetire() engine.Step { return retireStep{} }

func (retireStep) Name() string    { return "retire" }
func (retireStep) Needs() []string { return []string{"eeprom", "confirm", "scrub"} }
func (retireStep) Describe() string {
	return "moving the card's boot files into " + cardpath.Retired + "/ so the next boot is the SSD's (nixpi restore-card puts them back)"
}

func (retireStep) Probe(ctx context.Context, env *engine.Env) (bool, string, error) {
	order := wantedOrder(env).Value
	if ho := env.State.HandOver; ho != nil && ho.Finished {
		return true, "the hand-over finished in an earlier boot: a card brought back with nixpi restore-card stays bootable", nil
	}
	if !eeprom.SDBeforeUSB(order) {
		return true, fmt.Sprintf("BOOT_ORDER %s tries USB before the SD card: the card stays bootable, as a fallback", order), nil
	}
	card := retire.DirCard(env.Path(env.BootDir))
	_, err := retire.ReadManifest(card)
	if errors.Is(err, retire.ErrNotRetired) {
		return false, fmt.Sprintf("BOOT_ORDER %s tries the SD card first and its boot files are at the root", order), nil
	}
	if err != nil {
		return false, "", err
	}
	left, err := leftAtRoot(card)
	if err != nil {
		return false, "", err
	}
	if len(left) > 0 {
		return false, fmt.Sprintf("retiring was interrupted: %s still at the root", strings.Join(left, " ")), nil
	}
	return true, "the card's boot files are in " + cardpath.Retired + "/", nil
}

// leftAtRoot lists the boot files still at the card's root.
func leftAtRoot(card retire.Card) ([]string, error) {
	root, err := card.List(".")
	if err != nil {
		return nil, err
	}
	var left []string
	for _, e := range root {
		if retire.IsBootFile(e.Name, e.Dir) {
			left = append(left, e.Name)
		}
	}
	return left, nil
}

func (retireStep) Run(ctx context.Context, env *engine.Env) error {
	order := wantedOrder(env).Value
	ho := handOver(env)
	if !eeprom.SDBeforeUSB(order) {
		// Only reached when the engine redoes an interrupted step (no probe).
		ho.Retired = fmt.Sprintf("not retired: BOOT_ORDER %s tries USB first, the card is the fallback", order)
		return nil
	}
	if ho.Confirmed == nil {
		// A Pi must never be left booting nothing: only NixOS's own word
		// that it booted from the SSD lets the card go.
		return errors.New("retire: NixOS has not confirmed a boot from the SSD, so the card stays bootable")
	}
	card := retire.DirCard(env.Path(env.BootDir))
	m, err := retire.Retire(card, order, ho.Staged, env.Crash)
	if err != nil {
		return engine.WithHint(err, "the card's FAT is as the message says; nixpi restore-card on a computer puts every moved file back")
	}
	if ok, err := retire.Bootable(card); err != nil || ok {
		if err == nil {
			err = errors.New("retire: the card still has a start*.elf or config.txt at its root")
		}
		return err
	}
	ho.Retired = m.Summary()
	env.Logf("%s", ho.Retired)
	return nil
}
