/* Minimal PVH guest for irikit's Cloud Hypervisor tests (our own code).
 * Prints "PVH-HELLO cmdline=<cmdline>" to COM1; if the cmdline starts with 'p' it powers
 * off through CH's ACPI shutdown port (0x600, S5|SLP_EN) and QEMU q35's ACPI PM1a control
 * register (0x604, SLP_EN with SLP_TYP 0 = soft off); if it starts with 'e' it echoes every
 * byte COM1 receives, interrupt-driven (its own GDT and IDT, the 8259 PIC remapped to 0x20 with
 * only IRQ 4 unmasked, the local APIC disabled so the PIC drives INTR, the UART's receive
 * interrupt on; between interrupts it halts, so an echoing VM costs no host CPU: QEMU q35 has
 * the PIC, Cloud Hypervisor has none); otherwise it halts forever.
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
        lgdt gdt_ptr
        ljmp $0x08, $6f
6:      mov $0x10, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss
        mov $0x400000, %esp     /* a stack at 4 MiB for the interrupt frames */
        mov $0x300000, %edi     /* 256 interrupt gates at 3 MiB, all to echo_isr */
        mov $256, %ecx
        mov $echo_isr, %eax
8:      mov %ax, (%edi)
        movw $0x08, 2(%edi)
        movw $0x8e00, 4(%edi)
        mov %eax, %edx
        shr $16, %edx
        mov %dx, 6(%edi)
        add $8, %edi
        loop 8b
        lidt idt_ptr
        mov $0x11, %al          /* 8259: ICW1..ICW4, vectors 0x20/0x28, 8086 mode */
        out %al, $0x20
        out %al, $0xa0
        mov $0x20, %al
        out %al, $0x21
        mov $0x28, %al
        out %al, $0xa1
        mov $0x04, %al
        out %al, $0x21
        mov $0x02, %al
        out %al, $0xa1
        mov $0x01, %al
        out %al, $0x21
        out %al, $0xa1
        mov $0xef, %al          /* only IRQ 4 (COM1) */
        out %al, $0x21
        mov $0xff, %al
        out %al, $0xa1
        mov $0x1b, %ecx         /* IA32_APIC_BASE: clear the global enable */
        rdmsr
        and $0xfffff7ff, %eax
        wrmsr
        mov $0x3fc, %dx         /* MCR: DTR, RTS, OUT2 */
        mov $0x0b, %al
        out %al, %dx
        mov $0x3f9, %dx         /* IER: received data available */
        mov $0x01, %al
        out %al, %dx
        sti
9:      hlt
        jmp 9b
7:      hlt
        jmp 7b

/* Echo every byte COM1 holds, then end the interrupt at the PIC. */
echo_isr:
        push %eax
        push %edx
1:      mov $0x3fd, %dx         /* line status: bit 0 = data ready */
        in %dx, %al
        test $1, %al
        jz 2f
        mov $0x3f8, %dx
        in %dx, %al
        out %al, %dx
        jmp 1b
2:      mov $0x20, %al
        out %al, $0x20
        pop %edx
        pop %eax
        iret

        .balign 8
gdt:    .quad 0
        .quad 0x00cf9b000000ffff    /* 0x08: flat 32-bit code, accessed */
        .quad 0x00cf93000000ffff    /* 0x10: flat data, accessed */
gdt_ptr:
        .word 23
        .long gdt
idt_ptr:
        .word 256 * 8 - 1
        .long 0x300000
banner: .asciz "PVH-HELLO cmdline="
