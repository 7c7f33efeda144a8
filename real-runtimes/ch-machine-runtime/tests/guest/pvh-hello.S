/* Minimal PVH guest for irikit's Cloud Hypervisor tests (our own code).
 * Prints "PVH-HELLO cmdline=<cmdline>" to COM1; if the cmdline starts with 'p' it powers
 * off through CH's ACPI shutdown port (0x600, S5|SLP_EN) and QEMU q35's ACPI PM1a control
 * register (0x604, SLP_EN with SLP_TYP 0 = soft off); if it starts with 'e' it echoes every
 * byte COM1 receives (polling the line status register, so it keeps a host CPU busy: for the
 * console tests only); otherwise it halts forever.
 * %ebx points to hvm_start_info; the cmdline's physical address is at offset 24. */
        .section .note.Xen, "a"
        .balign 4
        .long 4, 8, 18          /* namesz, descsz, XEN_ELFNOTE_PHYS32_ENTRY */
        .asciz "Xen"
        .balign 4
        .quad pvh_start
        .text
        .code32
        .globl pvh_start
pvh_start:
        cli
        mov $0x3f8, %dx
        mov $banner, %esi
1:      lodsb
        test %al, %al
        jz 2f
        out %al, %dx
        jmp 1b
2:      mov 24(%ebx), %esi      /* hvm_start_info.cmdline_paddr */
        mov %esi, %edi
3:      lodsb
        test %al, %al
        jz 4f
        out %al, %dx
        jmp 3b
4:      mov $10, %al
        out %al, %dx
        cmpb $'p', (%edi)
        jne 5f
        mov $0x600, %dx
        mov $0x34, %al
        out %al, %dx
        mov $0x604, %dx
        mov $0x2000, %ax
        out %ax, %dx
5:      cmpb $'e', (%edi)
        jne 7f
6:      mov $0x3fd, %dx         /* COM1 line status: bit 0 = data ready */
        in %dx, %al
        test $1, %al
        jz 6b
        mov $0x3f8, %dx
        in %dx, %al
        out %al, %dx
        jmp 6b
7:      hlt
        jmp 7b
banner: .asciz "PVH-HELLO cmdline="
